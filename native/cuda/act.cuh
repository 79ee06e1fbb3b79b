// SwiGLU on the GPU (cpu/act.cpp is the oracle): out = silu(gate) * up, elementwise, T = float or
// bf16 (computed in fp32).
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

}  // namespace sft::cuda
