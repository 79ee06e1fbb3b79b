// RMSNorm on the GPU (cpu/norm.cpp is the oracle). T = float or bf16; rstd and dw are fp32.
// NOT YET RUN ON A GPU: checked only by test/cuda/test_kernels.cu, which needs one.
#pragma once
#include <cstdint>

#include "cuda/types.h"

namespace sft::cuda {

// y = w * x / sqrt(mean(x^2) + eps), per row of C; rstd[N] saved for backward.
template <typename T>
void rmsnorm_forward(T* out, float* rstd, const T* inp, const T* w, int64_t N, int64_t C, double eps,
                     cudaStream_t stream = 0);
// dinp[N, C] += ...; dw[C] += sum_n dy x rstd (dw may be null). dw's column sums run in a fixed
// order (row chunks, then chunks in order): deterministic, no atomics.
template <typename T>
void rmsnorm_backward(T* dinp, float* dw, const T* dout, const T* inp, const T* w, const float* rstd, int64_t N,
                      int64_t C, cudaStream_t stream = 0);

}  // namespace sft::cuda
