// The NCCL communicator (GPU buffers): libnccl.so.2 loaded at run time (nccl_api.h), its unique id
// broadcast through the bootstrap communicator (MPI under mpirun/srun). Built with the CUDA
// backend; without it create_nccl says so. Awaits a GPU run: only compiled so far.
#include <stdexcept>
#include <string>

#include "comm/comm.h"

#ifdef SFT_HAVE_CUDA
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>

#include "comm/nccl_api.h"

namespace sft::comm {
namespace {

using namespace nccl;

const Api& api() {
  static Api a = [] {
    void* h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_GLOBAL);
    if (!h) throw std::runtime_error(std::string("NCCL is not installed (libnccl.so.2: ") + dlerror() + "): install it (pip install nvidia-nccl-cu12, or the libnccl2 package) or put it on LD_LIBRARY_PATH");
    Api r{};
    auto sym = [&](const char* n) {
      void* p = dlsym(h, n);
      if (!p) throw std::runtime_error(std::string("libnccl.so.2 has no ") + n);
      return p;
    };
    r.GetUniqueId = reinterpret_cast<decltype(r.GetUniqueId)>(sym("ncclGetUniqueId"));
    r.CommInitRank = reinterpret_cast<decltype(r.CommInitRank)>(sym("ncclCommInitRank"));
    r.AllReduce = reinterpret_cast<decltype(r.AllReduce)>(sym("ncclAllReduce"));
    r.Broadcast = reinterpret_cast<decltype(r.Broadcast)>(sym("ncclBroadcast"));
    r.AllGather = reinterpret_cast<decltype(r.AllGather)>(sym("ncclAllGather"));
    r.GroupStart = reinterpret_cast<decltype(r.GroupStart)>(sym("ncclGroupStart"));
    r.GroupEnd = reinterpret_cast<decltype(r.GroupEnd)>(sym("ncclGroupEnd"));
    r.CommDestroy = reinterpret_cast<decltype(r.CommDestroy)>(sym("ncclCommDestroy"));
    r.CommAbort = reinterpret_cast<decltype(r.CommAbort)>(sym("ncclCommAbort"));
    r.GetErrorString = reinterpret_cast<decltype(r.GetErrorString)>(sym("ncclGetErrorString"));
    return r;
  }();
  return a;
}

void check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) throw std::runtime_error(std::string(what) + ": " + api().GetErrorString(r));
}
void check(cudaError_t r, const char* what) {
  if (r != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(r));
}

class NcclComm final : public Communicator {
 public:
  NcclComm(Communicator& boot, int device) : rank_(boot.rank()), size_(boot.size()) {
    check(cudaSetDevice(device), "cudaSetDevice");
    ncclUniqueId id{};
    if (rank_ == 0) check(api().GetUniqueId(&id), "ncclGetUniqueId");
    boot.broadcast(&id, sizeof id, 0);
    check(api().CommInitRank(&comm_, size_, id, rank_), "ncclCommInitRank");
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    check(cudaMalloc(&scratch_, kScratch * sizeof(double)), "cudaMalloc");
  }
  ~NcclComm() override {
    cudaFree(scratch_);
    cudaStreamDestroy(stream_);
    api().CommDestroy(comm_);
  }
  const char* backend() const override { return "nccl"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // GPU buffers are reduced in place; a host pointer (the loss and token sums) goes through scratch.
  void all_reduce_sum(float* buf, int64_t n) override { reduce(buf, n, ncclFloat32); }
  void all_reduce_sum(double* buf, int64_t n) override { reduce(buf, n, ncclFloat64); }
  void all_gather(float* buf, const int64_t* offsets) override { gather(buf, offsets, ncclFloat32); }
  void all_gather(double* buf, const int64_t* offsets) override { gather(buf, offsets, ncclFloat64); }
  void all_gather(uint8_t* buf, const int64_t* offsets) override { gather(buf, offsets, ncclUint8); }
  void broadcast(void* buf, int64_t bytes, int root) override {
    staged(buf, bytes, [&](void* p) { check(api().Broadcast(p, p, size_t(bytes), ncclUint8, root, comm_, stream_), "ncclBroadcast"); });
  }
  void barrier() override {
    double x = 0;
    all_reduce_sum(&x, 1);
  }
  [[noreturn]] void abort(int code) override {
    api().CommAbort(comm_);
    std::_Exit(code);
  }

 private:
  static constexpr int64_t kScratch = 1024;  // doubles: host scalars staged through the GPU
  static constexpr int64_t kBucket = int64_t(1) << 26;
  static bool on_device(const void* p) {
    cudaPointerAttributes a{};
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
  }
  template <class F>
  void staged(void* buf, int64_t bytes, F op) {
    if (on_device(buf)) {
      op(buf);
    } else {
      if (bytes > int64_t(kScratch * sizeof(double))) throw std::runtime_error("nccl: host buffers are for scalars only");
      check(cudaMemcpyAsync(scratch_, buf, size_t(bytes), cudaMemcpyHostToDevice, stream_), "cudaMemcpy");
      op(scratch_);
      check(cudaMemcpyAsync(buf, scratch_, size_t(bytes), cudaMemcpyDeviceToHost, stream_), "cudaMemcpy");
    }
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }
  template <class T>
  void reduce(T* buf, int64_t n, int dtype) {
    // The gradients are complete when this is called (the backward ran on the default stream).
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    staged(buf, n * int64_t(sizeof(T)), [&](void* p) {
      for (int64_t off = 0; off < n; off += kBucket) {
        const size_t m = size_t(std::min<int64_t>(kBucket, n - off));
        check(api().AllReduce(static_cast<T*>(p) + off, static_cast<T*>(p) + off, m, dtype, ncclSum, comm_, stream_), "ncclAllReduce");
      }
    });
  }
  // Equal parts, back to back: ncclAllGather in place (this rank's part is already where it goes).
  // Unequal ones (ZeRO's slices end on 256-element blocks inside tensors): one broadcast per part
  // in one group, NCCL's documented all-gather-v.
  template <class T>
  void gather(T* buf, const int64_t* off, int dtype) {
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");  // the parts were written on the compute stream
    const int64_t n0 = off[1] - off[0];
    bool equal = true;
    for (int r = 0; r < size_; r++) equal = equal && off[r + 1] - off[r] == n0;
    staged(buf + off[0], (off[size_] - off[0]) * int64_t(sizeof(T)), [&](void* p) {
      T* b = static_cast<T*>(p) - off[0];
      if (equal) {
        check(api().AllGather(b + off[rank_], b + off[0], size_t(n0), dtype, comm_, stream_), "ncclAllGather");
        return;
      }
      check(api().GroupStart(), "ncclGroupStart");
      for (int r = 0; r < size_; r++)
        if (off[r + 1] > off[r])
          check(api().Broadcast(b + off[r], b + off[r], size_t(off[r + 1] - off[r]), dtype, r, comm_, stream_), "ncclBroadcast");
      check(api().GroupEnd(), "ncclGroupEnd");
    });
  }
  int rank_, size_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  void* scratch_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> create_nccl(Communicator& bootstrap, int device) {
  return std::make_unique<NcclComm>(bootstrap, device);
}

}  // namespace sft::comm

#else

namespace sft::comm {
std::unique_ptr<Communicator> create_nccl(Communicator&, int) {
  throw std::runtime_error("this sft was built without the CUDA backend, so without NCCL: rebuild where nvcc is found");
}
}  // namespace sft::comm

#endif
