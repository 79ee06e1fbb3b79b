// Which backends this build has, and the model factory of each. The CPU backend is always there;
// the CUDA backend registers itself when the build has it (register_cuda_backend(), called by the
// addon and by the emulated CUDA tests), so the engine library never depends on CUDA.
#pragma once
#include <memory>
#include <string>

#include "model/model.h"

namespace sft {

using ModelFactory = std::unique_ptr<ModelBase> (*)(const ModelConfig& cfg, Compute compute, bool meta);

// Devices usable now (CUDA: 0 with *error set when there is no driver or device).
using DeviceProbe = int (*)(std::string* error);

void register_backend(Device d, ModelFactory make, DeviceProbe probe);
bool backend_built(Device d);
int backend_devices(Device d, std::string* error);

std::unique_ptr<ModelBase> make_cpu_model(const ModelConfig& cfg, Compute compute, bool meta);  // cpu/models.cpp

}  // namespace sft
