// The MPI communicator (CPU buffers), built as its own shared library (sft_mpi.so) only where
// CMake finds MPI; the addon dlopens it under mpirun/srun, so the addon itself never links libmpi.
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "comm/comm.h"

namespace sft::comm {
namespace {

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw std::runtime_error(std::string(what) + ": " + std::string(msg, size_t(len)));
}

class MpiComm final : public Communicator {
 public:
  MpiComm() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    // Errors come back as codes (turned into exceptions) instead of killing the process silently.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  ~MpiComm() override {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
  }
  const char* backend() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce_sum(float* buf, int64_t n) override { reduce(buf, n, MPI_FLOAT); }
  void all_reduce_sum(double* buf, int64_t n) override { reduce(buf, n, MPI_DOUBLE); }
  void all_gather(float* buf, const int64_t* offsets) override { gather(buf, offsets, MPI_FLOAT); }
  void all_gather(double* buf, const int64_t* offsets) override { gather(buf, offsets, MPI_DOUBLE); }
  void all_gather(uint8_t* buf, const int64_t* offsets) override { gather(buf, offsets, MPI_BYTE); }
  void broadcast(void* buf, int64_t bytes, int root) override {
    for (int64_t off = 0; off < bytes; off += kBucket) {
      const int n = int(std::min<int64_t>(kBucket, bytes - off));
      check(MPI_Bcast(static_cast<char*>(buf) + off, n, MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
    }
  }
  void barrier() override { check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }
  [[noreturn]] void abort(int code) override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

 private:
  // Buckets of 16 Mi elements: MPI counts are int, and one bucket's sum is done before the next is
  // sent (the order of the elements' sums does not depend on the bucket size).
  static constexpr int64_t kBucket = int64_t(1) << 24;
  template <class T>
  void reduce(T* buf, int64_t n, MPI_Datatype t) {
    for (int64_t off = 0; off < n; off += kBucket) {
      const int m = int(std::min<int64_t>(kBucket, n - off));
      check(MPI_Allreduce(MPI_IN_PLACE, buf + off, m, t, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
    }
  }
  // MPI_Allgatherv in place. Its counts and displacements are int: a buffer past INT_MAX elements
  // goes as one bucketed broadcast per part instead (the same bits, each part from its owner).
  template <class T>
  void gather(T* buf, const int64_t* off, MPI_Datatype t) {
    if (off[size_] - off[0] <= INT_MAX) {
      std::vector<int> counts(static_cast<size_t>(size_)), displs(static_cast<size_t>(size_));
      for (int r = 0; r < size_; r++) counts[size_t(r)] = int(off[r + 1] - off[r]), displs[size_t(r)] = int(off[r] - off[0]);
      check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf + off[0], counts.data(), displs.data(), t, MPI_COMM_WORLD), "MPI_Allgatherv");
      return;
    }
    for (int r = 0; r < size_; r++) broadcast(buf + off[r], (off[r + 1] - off[r]) * int64_t(sizeof(T)), r);
  }
  int rank_ = 0, size_ = 1;
};

}  // namespace
}  // namespace sft::comm

extern "C" __attribute__((visibility("default"))) sft::comm::Communicator* sft_comm_create_mpi(char* err, int cap) {
  try {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      // Serialized: the addon calls MPI from one thread at a time (JavaScript awaits each
      // collective), but not always the main one (the gradient all-reduce runs in a worker).
      int provided = 0;
      sft::comm::check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided), "MPI_Init_thread");
      if (provided < MPI_THREAD_SERIALIZED) throw std::runtime_error("this MPI does not support MPI_THREAD_SERIALIZED");
    }
    return new sft::comm::MpiComm();
  } catch (const std::exception& e) {
    std::snprintf(err, size_t(cap), "%s", e.what());
    return nullptr;
  }
}
