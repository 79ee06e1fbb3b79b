#pragma once
#include <napi.h>

#include "comm/comm.h"

namespace sft::addon {

// The process's communicator: single until comm.init() finds a launcher.
comm::Communicator& world();
// `comm`: { init, allReduceSum, barrier, abort } (typed in src/native/types.ts).
Napi::Object CommExports(Napi::Env env);

}  // namespace sft::addon
