// The communicator: the one way tensors and scalars move between data-parallel ranks. Three
// implementations: single (world size 1, no-ops), MPI (CPU buffers; mpi_comm.cpp, a separate
// shared library the addon dlopens, so the addon loads where no MPI is installed) and NCCL (GPU
// buffers; nccl_comm.cpp loads libnccl.so.2 at run time). docs/SCALING.md has the design.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

namespace sft::comm {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual const char* backend() const = 0;  // "single", "mpi", "nccl"
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place, elementwise sum over the ranks; every rank gets the same bits.
  virtual void all_reduce_sum(float* buf, int64_t n) = 0;
  virtual void all_reduce_sum(double* buf, int64_t n) = 0;
  // In place, ZeRO's all-gather: rank r holds buf[offsets[r], offsets[r+1]) (size() + 1 ascending
  // element offsets, the same on every rank; parts may be empty); afterwards every rank holds all
  // of buf[offsets[0], offsets[size()]), bit for bit what each part's owner had.
  virtual void all_gather(float* buf, const int64_t* offsets) = 0;
  virtual void all_gather(double* buf, const int64_t* offsets) = 0;
  virtual void all_gather(uint8_t* buf, const int64_t* offsets) = 0;
  virtual void broadcast(void* buf, int64_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // Stops every rank of the job (a rank that failed alone would leave the others waiting).
  [[noreturn]] virtual void abort(int code) = 0;
};

// World size 1: every collective is the identity.
class SingleComm final : public Communicator {
 public:
  const char* backend() const override { return "single"; }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(float*, int64_t) override {}
  void all_reduce_sum(double*, int64_t) override {}
  void all_gather(float*, const int64_t*) override {}
  void all_gather(double*, const int64_t*) override {}
  void all_gather(uint8_t*, const int64_t*) override {}
  void broadcast(void*, int64_t, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(int code) override;
};

// Where the launcher put this process: mpirun/srun (OMPI_COMM_WORLD_*, PMIX_*/PMI_*, SLURM_*) or
// torchrun's RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT. launcher "" = not launched.
struct LaunchEnv {
  std::string launcher;  // "mpi", "slurm", "torchrun" or ""
  int rank = 0, size = 1, local_rank = 0;
  std::string master_addr;
  int master_port = 0;
};
LaunchEnv launch_env();

// The C entry point of the MPI library (sft_mpi.so): MPI_Init_thread, then the world communicator.
// Returns nullptr and fills `err` (size `cap`) when MPI cannot start.
extern "C" typedef Communicator* (*CreateMpiFn)(char* err, int cap);
#define SFT_MPI_CREATE_SYMBOL "sft_comm_create_mpi"

// The MPI communicator from sft_mpi.so next to the addon (throws, saying what is missing).
std::unique_ptr<Communicator> load_mpi(const std::string& library_path);

// NCCL over GPU buffers, its unique id broadcast through `bootstrap` (MPI when launched by mpirun).
// Throws where libnccl.so.2 or a GPU is missing.
std::unique_ptr<Communicator> create_nccl(Communicator& bootstrap, int device);

}  // namespace sft::comm
