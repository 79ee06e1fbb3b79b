// Activations on the GPU (cpu/act.cpp is the oracle): SwiGLU, out = silu(gate) * up, and Bloom's
// tanh-form GELU, elementwise, T = float or bf16 (computed in fp32).
// NOT YET RUN ON A GPU: checked only by test/cuda/test_kernels.cu, which needs one.
#pragma once
#include <cstdint>

#include "cuda/types.h"

namespace sft::cuda {

template <typename T>
void swiglu_forward(T* out, const T* gate, const T* up, int64_t n, cudaStream_t stream = 0);
// dgate += dout * up * silu'(gate);  dup += dout * silu(gate)
template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t n,
                     cudaStream_t stream = 0);

// out = 0.5 x (1 + tanh(0.79788456 x (1 + 0.044715 x^2))) (Bloom's constants, as transformers writes
// them), evaluated as the equal x * sigmoid(2u): see act.cu.
template <typename T>
void gelu_tanh_forward(T* out, const T* inp, int64_t n, cudaStream_t stream = 0);
// dinp += dout * gelu'(inp)
template <typename T>
void gelu_tanh_backward(T* dinp, const T* dout, const T* inp, int64_t n, cudaStream_t stream = 0);

}  // namespace sft::cuda
