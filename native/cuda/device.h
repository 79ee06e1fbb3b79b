#pragma once
#include <string>

namespace sft::cuda {
// Number of usable CUDA devices; 0 with *error set when there is no driver or device.
int device_count(std::string* error);
}  // namespace sft::cuda

namespace sft {
// Makes the CUDA backend available to make_model (cuda/models.cpp): the addon and the emulated
// CUDA tests call it once at start.
void register_cuda_backend();
}  // namespace sft
