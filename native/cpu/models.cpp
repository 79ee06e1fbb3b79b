// The model families on the CPU backend: float for real use, bf16 (bf16 weights and activations,
// fp32 masters and gradients), double for the gradient checks.
#include <memory>
#include <stdexcept>

#include "backend/registry.h"
#include "cpu/backend.h"
#include "model/bloom.h"
#include "model/llama.h"

namespace sft {

template <typename T>
static std::unique_ptr<ModelBase> make_for(const ModelConfig& cfg, bool meta) {
  if (cfg.arch == Arch::Bloom) return std::make_unique<model::BloomModel<CpuBackend<T>>>(cfg, meta);
  return std::make_unique<model::LlamaModel<CpuBackend<T>>>(cfg, meta);
}

std::unique_ptr<ModelBase> make_cpu_model(const ModelConfig& cfg, Compute compute, bool meta) {
  switch (compute) {
    case Compute::F32: return make_for<float>(cfg, meta);
    case Compute::F64: return make_for<double>(cfg, meta);
    case Compute::BF16: return make_for<cpu::bf16>(cfg, meta);
  }
  throw std::runtime_error("unknown compute type for the CPU backend");
}

}  // namespace sft
