#pragma once
#include <string>

namespace sft::cuda {
// Number of usable CUDA devices; 0 with *error set when there is no driver or device.
int device_count(std::string* error);
}  // namespace sft::cuda
