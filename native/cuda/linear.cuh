// The bias half of linear layers on the GPU (cpu/linear.cpp is the oracle: cpu::add_bias and the
// dbias part of cpu::linear_backward); the matmuls themselves are cuda/gemm.cuh's. T = float or
// bf16 storage, fp32 arithmetic; the bias gradient is fp32.
// NOT YET RUN ON A GPU: checked only by test/cuda/test_kernels.cu, which needs one.
#pragma once
#include <cstdint>

#include "cuda/types.h"

namespace sft::cuda {

// out[m*N + n] += bias[n] for every row m of M.
template <typename T>
void add_bias(T* out, const T* bias, int64_t M, int64_t N, cudaStream_t stream = 0);

// dbias[n] += sum over m of dout[m*N + n]. The column sums run in a fixed order that depends on M
// only (chunks of rows, then the chunks in order; as rmsnorm_backward's dw): deterministic, no
// atomics. Temporary: chunks * N floats (chunks <= 64) from cudaMallocAsync.
template <typename T>
void bias_backward(float* dbias, const T* dout, int64_t M, int64_t N, cudaStream_t stream = 0);

}  // namespace sft::cuda
