#pragma once
#include <string>

namespace sft::cuda {
// Number of usable CUDA devices; 0 with *error set when there is no driver or device.
int device_count(std::string* error);
// The GPU this process computes on: 0, or the data-parallel launcher's local rank (comm init sets it,
// so the ranks on one machine use one GPU each). Every backend thread selects it.
int& process_device();
// Makes process_device() the calling thread's current device (the addon's worker threads call it before
// each engine call; the CUDA runtime's current device is per thread). A no-op for device 0.
void select_process_device();
}  // namespace sft::cuda

namespace sft {
// Makes the CUDA backend available to make_model (cuda/models.cpp): the addon and the emulated
// CUDA tests call it once at start.
void register_cuda_backend();
}  // namespace sft
