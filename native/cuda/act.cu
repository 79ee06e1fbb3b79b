// SwiGLU: grid-stride elementwise kernels (memory bound; fp32 math).
#include "cuda/act.cuh"
#include "cuda/common.cuh"

namespace sft::cuda {
namespace {

template <typename T>
__global__ void swiglu_fwd_kernel(T* out, const T* gate, const T* up, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = to_f32(gate[i]);
    out[i] = from_f32<T>(g / (1.f + expf(-g)) * to_f32(up[i]));
  }
}

// d silu(g)/dg = s (1 + g (1 - s)),  s = sigmoid(g)
template <typename T>
__global__ void swiglu_bwd_kernel(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = to_f32(gate[i]), u = to_f32(up[i]), dy = to_f32(dout[i]);
    const float s = 1.f / (1.f + expf(-g));
    dgate[i] = from_f32<T>(to_f32(dgate[i]) + dy * u * s * (1.f + g * (1.f - s)));
    dup[i] = from_f32<T>(to_f32(dup[i]) + dy * g * s);
  }
}

}  // namespace

template <typename T>
void swiglu_forward(T* out, const T* gate, const T* up, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  SFT_LAUNCH(grid_for(n, 256), 256, 0, stream, swiglu_fwd_kernel<T>)(out, gate, up, n);
  SFT_CUDA_CHECK_LAUNCH("swiglu_forward");
}

template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  SFT_LAUNCH(grid_for(n, 256), 256, 0, stream, swiglu_bwd_kernel<T>)(dgate, dup, dout, gate, up, n);
  SFT_CUDA_CHECK_LAUNCH("swiglu_backward");
}

template void swiglu_forward<float>(float*, const float*, const float*, int64_t, cudaStream_t);
template void swiglu_forward<bf16>(bf16*, const bf16*, const bf16*, int64_t, cudaStream_t);
template void swiglu_backward<float>(float*, float*, const float*, const float*, const float*, int64_t, cudaStream_t);
template void swiglu_backward<bf16>(bf16*, bf16*, const bf16*, const bf16*, const bf16*, int64_t, cudaStream_t);

}  // namespace sft::cuda
