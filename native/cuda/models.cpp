// The model families on the CUDA backend (fp32 or bf16 compute), and the backend's registration.
#include <memory>
#include <stdexcept>

#include "backend/registry.h"
#include "cuda/backend.h"
#include "cuda/device.h"
#include "model/bloom.h"
#include "model/llama.h"

namespace sft {

namespace {

template <typename T>
std::unique_ptr<ModelBase> make_for(const ModelConfig& cfg, bool meta) {
  if (cfg.arch == Arch::Bloom) return std::make_unique<model::BloomModel<CudaBackend<T>>>(cfg, meta);
  return std::make_unique<model::LlamaModel<CudaBackend<T>>>(cfg, meta);
}

std::unique_ptr<ModelBase> make_cuda_model(const ModelConfig& cfg, Compute compute, bool meta) {
  switch (compute) {
    case Compute::F32: return make_for<float>(cfg, meta);
    case Compute::BF16: return make_for<cuda::bf16>(cfg, meta);
    case Compute::F64: break;
  }
  throw std::runtime_error("the cuda backend computes in f32 or bf16, not f64");
}

}  // namespace

void register_cuda_backend() { register_backend(Device::Cuda, make_cuda_model, cuda::device_count); }

}  // namespace sft
