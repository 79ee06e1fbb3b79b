// `native().comm`: the data-parallel world this process belongs to (comm/comm.h). init() reads the
// launcher's environment and starts MPI (and NCCL on the GPU); the collectives on host scalars are
// synchronous (a few numbers per step), the gradient all-reduce is Model.allReduceGrads (a worker).
#include "addon/Comm.h"

#include <dlfcn.h>

#include <memory>
#include <string>

#include "comm/tcp_bootstrap.h"
#ifdef SFT_HAVE_CUDA
#include "cuda/device.h"
#endif

namespace sft::addon {
namespace {

std::unique_ptr<comm::Communicator> g_single = std::make_unique<comm::SingleComm>();
std::unique_ptr<comm::Communicator> g_mpi;   // MPI: the world on the CPU, NCCL's bootstrap on the GPU
std::unique_ptr<comm::Communicator> g_boot;  // torchrun without MPI: NCCL's bootstrap (tcp_bootstrap.h)
std::unique_ptr<comm::Communicator> g_nccl;  // GPU worlds
comm::LaunchEnv g_env;

// sft_mpi.so sits next to the addon (build/Release).
std::string mpi_library_path() {
  Dl_info info{};
  if (!dladdr(reinterpret_cast<void*>(&mpi_library_path), &info) || !info.dli_fname) return "sft_mpi.so";
  std::string self = info.dli_fname;
  const size_t slash = self.rfind('/');
  return (slash == std::string::npos ? std::string(".") : self.substr(0, slash)) + "/sft_mpi.so";
}

// The GPU of this rank on its machine (local rank modulo the GPUs there), made the engine's device.
int use_local_gpu() {
#ifdef SFT_HAVE_CUDA
  const int n = sft::cuda::device_count(nullptr);
  sft::cuda::process_device() = n > 0 ? g_env.local_rank % n : 0;
  return sft::cuda::process_device();
#else
  return 0;
#endif
}

// init({ device }): { rank, size, localRank, backend, launcher }. Idempotent.
Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string device = info[0].IsObject() && info[0].As<Napi::Object>().Has("device")
                                 ? info[0].As<Napi::Object>().Get("device").ToString().Utf8Value()
                                 : "cpu";
  try {
    if (!g_mpi && !g_nccl) {
      g_env = comm::launch_env();
      if (g_env.launcher == "mpi" || g_env.launcher == "slurm") {
        g_mpi = comm::load_mpi(mpi_library_path());
        if (g_mpi->size() != g_env.size || g_mpi->rank() != g_env.rank)
          throw std::runtime_error("MPI's world (rank " + std::to_string(g_mpi->rank()) + " of " + std::to_string(g_mpi->size()) +
                                   ") differs from the launcher's environment (rank " + std::to_string(g_env.rank) + " of " +
                                   std::to_string(g_env.size) + "): is this sft's MPI the one mpirun belongs to?");
        if (device == "cuda") g_nccl = comm::create_nccl(*g_mpi, use_local_gpu());
      } else if (g_env.launcher == "torchrun" && g_env.size > 1) {
        // Without MPI only GPUs can form a world: NCCL moves the tensors, its id crosses by TCP.
        if (device != "cuda")
          throw std::runtime_error("a torchrun-style launch (RANK/WORLD_SIZE) on the CPU: CPU processes exchange gradients through MPI — launch with mpirun -np N (or srun), or sft train --nproc-per-node N; on GPUs the same environment runs NCCL");
        if (g_env.master_addr.empty()) throw std::runtime_error("RANK/WORLD_SIZE are set but MASTER_ADDR is not: set MASTER_ADDR (rank 0's host) and MASTER_PORT");
        g_boot = std::make_unique<comm::TcpBootstrap>(g_env.rank, g_env.size, g_env.master_addr, comm::bootstrap_port(g_env));
        g_nccl = comm::create_nccl(*g_boot, use_local_gpu());
      }
    }
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  comm::Communicator& w = world();
  Napi::Object o = Napi::Object::New(env);
  o.Set("rank", w.rank());
  o.Set("size", w.size());
  o.Set("localRank", g_env.local_rank);
  o.Set("backend", w.backend());
  o.Set("launcher", g_env.launcher);
  return o;
}

// allReduceSum(Float64Array): in place, summed over the ranks (target counts, loss sums, flags).
Napi::Value AllReduceSum(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
    throw Napi::TypeError::New(env, "comm.allReduceSum: a Float64Array is required");
  auto a = info[0].As<Napi::Float64Array>();
  try {
    host_world().all_reduce_sum(a.Data(), int64_t(a.ElementLength()));
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  return env.Undefined();
}

Napi::Value Barrier(const Napi::CallbackInfo& info) {
  try {
    world().barrier();
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
  return info.Env().Undefined();
}

Napi::Value Abort(const Napi::CallbackInfo& info) {
  const int code = info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 1;
  world().abort(code);
  return info.Env().Undefined();  // not reached
}

}  // namespace

comm::Communicator& world() { return g_nccl ? *g_nccl : g_mpi ? *g_mpi : *g_single; }
comm::Communicator& host_world() { return g_mpi ? *g_mpi : world(); }

Napi::Object CommExports(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("init", Napi::Function::New(env, Init));
  o.Set("allReduceSum", Napi::Function::New(env, AllReduceSum));
  o.Set("barrier", Napi::Function::New(env, Barrier));
  o.Set("abort", Napi::Function::New(env, Abort));
  return o;
}

}  // namespace sft::addon
