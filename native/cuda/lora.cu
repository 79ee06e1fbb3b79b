// LoRA dropout: grid-stride elementwise kernels that evaluate the counter-based mask per element.
// The mask test is random.h's own uniform01_key (53-bit double compared with p) rather than an
// integer threshold derived from it, so the device can never drift from the CPU's definition; it
// costs one 64-bit integer hash, one u64 -> f64 conversion and one f64 multiply per element.
#include "cuda/lora.cuh"
#include "cuda/common.cuh"
#include "core/random.h"

#include <stdexcept>

namespace sft::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void dropout_fwd_kernel(T* out, const T* x, int64_t n, double p, uint64_t key, float keep) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const bool dropped = sft::rng::uniform01_key(key, uint64_t(i)) < p;
    out[i] = dropped ? from_f32<T>(0.f) : from_f32<T>(to_f32(x[i]) * keep);
  }
}

// dx + dxd * keep with the product rounded on its own (__fmul_rn: no FMA contraction), as the CPU's
// `dx[i] += dxin[i] * keep`: fp32 results are bit-identical to it.
template <typename T>
__global__ void dropout_bwd_kernel(T* dx, const T* dxd, int64_t n, double p, uint64_t key, float keep) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    if (sft::rng::uniform01_key(key, uint64_t(i)) < p) continue;
    dx[i] = from_f32<T>(to_f32(dx[i]) + __fmul_rn(to_f32(dxd[i]), keep));
  }
}

void check_p(double p) {
  if (!(p >= 0.0 && p < 1.0)) throw std::runtime_error("dropout: p must be in [0, 1)");
}

}  // namespace

template <typename T>
void dropout_forward(T* out, const T* x, int64_t n, double p, uint64_t key, cudaStream_t stream) {
  check_p(p);
  if (n <= 0) return;
  const float keep = float(1.0 / (1.0 - p));
  SFT_LAUNCH(grid_for(n, kThreads), kThreads, 0, stream, dropout_fwd_kernel<T>)(out, x, n, p, key, keep);
  SFT_CUDA_CHECK_LAUNCH("dropout_forward");
}

template <typename T>
void dropout_backward_add(T* dx, const T* dxd, int64_t n, double p, uint64_t key, cudaStream_t stream) {
  check_p(p);
  if (n <= 0) return;
  const float keep = float(1.0 / (1.0 - p));
  SFT_LAUNCH(grid_for(n, kThreads), kThreads, 0, stream, dropout_bwd_kernel<T>)(dx, dxd, n, p, key, keep);
  SFT_CUDA_CHECK_LAUNCH("dropout_backward_add");
}

#define SFT_INSTANTIATE(T)                                                                            \
  template void dropout_forward<T>(T*, const T*, int64_t, double, uint64_t, cudaStream_t);            \
  template void dropout_backward_add<T>(T*, const T*, int64_t, double, uint64_t, cudaStream_t);
SFT_INSTANTIATE(float)
SFT_INSTANTIATE(bf16)
#undef SFT_INSTANTIATE

}  // namespace sft::cuda
