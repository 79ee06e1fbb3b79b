// SwiGLU and tanh-form GELU: grid-stride elementwise kernels (memory bound; fp32 math).
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

// Bloom's constants: 0.79788456 ~ sqrt(2/pi), 0.044715 (cpu/act.cpp's kGeluA, kGeluB).
constexpr float kGeluA = 0.79788456f, kGeluB = 0.044715f;

// With u = a x (1 + b x^2) and s = sigmoid(2u): 0.5 (1 + tanh u) = s exactly, so
//   gelu(x) = x s,   gelu'(x) = 0.5 (1 + t) + 0.5 x (1 - t^2) a (1 + 3 b x^2) = s + 2 x s (1 - s) a (1 + 3 b x^2).
// This form needs one expf and no tanhf: it has no cancellation where tanh u -> -1 (large negative
// x), and its accuracy does not depend on how --use_fast_math maps tanhf.
__device__ __forceinline__ float gelu_sigmoid(float x) {
  const float u = kGeluA * x * (1.f + kGeluB * x * x);
  return 1.f / (1.f + expf(-2.f * u));
}

template <typename T>
__global__ void gelu_fwd_kernel(T* out, const T* inp, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float x = to_f32(inp[i]);
    out[i] = from_f32<T>(x * gelu_sigmoid(x));
  }
}

template <typename T>
__global__ void gelu_bwd_kernel(T* dinp, const T* dout, const T* inp, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float x = to_f32(inp[i]), s = gelu_sigmoid(x);
    const float d = s + 2.f * x * s * (1.f - s) * kGeluA * (1.f + 3.f * kGeluB * x * x);
    dinp[i] = from_f32<T>(to_f32(dinp[i]) + to_f32(dout[i]) * d);
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

template <typename T>
void gelu_tanh_forward(T* out, const T* inp, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  SFT_LAUNCH(grid_for(n, 256), 256, 0, stream, gelu_fwd_kernel<T>)(out, inp, n);
  SFT_CUDA_CHECK_LAUNCH("gelu_tanh_forward");
}

template <typename T>
void gelu_tanh_backward(T* dinp, const T* dout, const T* inp, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  SFT_LAUNCH(grid_for(n, 256), 256, 0, stream, gelu_bwd_kernel<T>)(dinp, dout, inp, n);
  SFT_CUDA_CHECK_LAUNCH("gelu_tanh_backward");
}

template void swiglu_forward<float>(float*, const float*, const float*, int64_t, cudaStream_t);
template void swiglu_forward<bf16>(bf16*, const bf16*, const bf16*, int64_t, cudaStream_t);
template void swiglu_backward<float>(float*, float*, const float*, const float*, const float*, int64_t, cudaStream_t);
template void swiglu_backward<bf16>(bf16*, bf16*, const bf16*, const bf16*, const bf16*, int64_t, cudaStream_t);
template void gelu_tanh_forward<float>(float*, const float*, int64_t, cudaStream_t);
template void gelu_tanh_forward<bf16>(bf16*, const bf16*, int64_t, cudaStream_t);
template void gelu_tanh_backward<float>(float*, const float*, const float*, int64_t, cudaStream_t);
template void gelu_tanh_backward<bf16>(bf16*, const bf16*, const bf16*, int64_t, cudaStream_t);

}  // namespace sft::cuda
