#pragma once
#include <napi.h>

#include "comm/comm.h"

namespace sft::addon {

// The process's communicator: single until comm.init() finds a launcher.
comm::Communicator& world();
// The communicator for host buffers: MPI where it runs (NCCL's bootstrap on a GPU world), else world().
comm::Communicator& host_world();
// `comm`: { init, allReduceSum, barrier, abort } (typed in src/native/types.ts).
Napi::Object CommExports(Napi::Env env);

}  // namespace sft::addon
