// Where the launcher put this process, the single communicator, and loading the MPI one.
#include <dlfcn.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "comm/comm.h"

namespace sft::comm {
namespace {

const char* env(const char* k) {
  const char* v = std::getenv(k);
  return v && *v ? v : nullptr;
}

int env_int(const char* k, int dflt) {
  const char* v = env(k);
  return v ? std::atoi(v) : dflt;
}

}  // namespace

void SingleComm::abort(int code) { std::_Exit(code); }

LaunchEnv launch_env() {
  LaunchEnv e;
  if (env("OMPI_COMM_WORLD_SIZE")) {  // Open MPI's mpirun
    e.launcher = "mpi";
    e.rank = env_int("OMPI_COMM_WORLD_RANK", 0);
    e.size = env_int("OMPI_COMM_WORLD_SIZE", 1);
    e.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0);
  } else if (env("PMIX_RANK") || env("PMI_RANK")) {  // MPICH's hydra, srun --mpi=pmi2/pmix
    e.launcher = env("SLURM_PROCID") ? "slurm" : "mpi";
    e.rank = env_int("PMIX_RANK", env_int("PMI_RANK", 0));
    e.size = env_int("PMI_SIZE", env_int("SLURM_NTASKS", 1));
    e.local_rank = env_int("MPI_LOCALRANKID", env_int("SLURM_LOCALID", 0));
  } else if (env("SLURM_PROCID") && env("SLURM_NTASKS") && env_int("SLURM_NTASKS", 1) > 1 && env("SLURM_STEP_ID")) {
    e.launcher = "slurm";  // srun without a PMI plugin: MPI_Init still finds Slurm's PMI
    e.rank = env_int("SLURM_PROCID", 0);
    e.size = env_int("SLURM_NTASKS", 1);
    e.local_rank = env_int("SLURM_LOCALID", 0);
  } else if (env("WORLD_SIZE") && env("RANK")) {  // torchrun
    e.launcher = "torchrun";
    e.rank = env_int("RANK", 0);
    e.size = env_int("WORLD_SIZE", 1);
    e.local_rank = env_int("LOCAL_RANK", 0);
    if (const char* a = env("MASTER_ADDR")) e.master_addr = a;
    e.master_port = env_int("MASTER_PORT", 0);
  }
  return e;
}

std::unique_ptr<Communicator> load_mpi(const std::string& path) {
  // RTLD_GLOBAL: Open MPI's own plugins (mca_*.so) resolve their symbols against libmpi's.
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (!h) {
    throw std::runtime_error(std::string("launched by MPI, but ") + path + " cannot be loaded (" + dlerror() +
                             "): install MPI (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev) and rebuild sft (npm run build:native)");
  }
  auto create = reinterpret_cast<CreateMpiFn>(dlsym(h, SFT_MPI_CREATE_SYMBOL));
  if (!create) throw std::runtime_error(path + " has no " SFT_MPI_CREATE_SYMBOL " — rebuild sft (npm run build:native)");
  char err[512] = {0};
  Communicator* c = create(err, sizeof err);
  if (!c) throw std::runtime_error(std::string("MPI did not start: ") + err);
  return std::unique_ptr<Communicator>(c);
}

}  // namespace sft::comm
