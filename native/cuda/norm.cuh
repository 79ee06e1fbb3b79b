// RMSNorm, LayerNorm (Bloom) and row L2-normalisation (Baichuan2's NormHead) on the GPU
// (cpu/norm.cpp is the oracle). T = float or bf16; the saved row statistics (rstd, mean) and the
// parameter gradients (dw, db, and l2norm's din/dout, which are the NormHead weight's) are fp32.
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

// y = w * (x - mean(x)) / sqrt(var(x) + eps) + b per row of C (biased variance, as torch's
// LayerNorm); mean[N] and rstd[N] saved for backward (either may be null: inference).
template <typename T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* w, const T* b, int64_t N, int64_t C,
                       double eps, cudaStream_t stream = 0);
// dinp[N, C] += ...; dw[C] += sum_n dy xhat, db[C] += sum_n dy (either may be null; dinp too). The
// column sums run in a fixed order as rmsnorm_backward's dw. Temporary: chunks * C floats for
// each of dw, db that is not null (chunks <= 64), from cudaMallocAsync.
template <typename T>
void layernorm_backward(T* dinp, float* dw, float* db, const T* dout, const T* inp, const T* w, const float* mean,
                        const float* rstd, int64_t N, int64_t C, cudaStream_t stream = 0);

// out[r] = in[r] / max(||in[r]||, eps) for each of R rows of C.
template <typename T>
void l2norm_rows_forward(T* out, const T* in, int64_t R, int64_t C, double eps, cudaStream_t stream = 0);
// din += (dout - y (y . dout)) / ||in[r]|| per row (dout / eps where the norm is clamped). din and
// dout are fp32: in NormHead they are the weight's gradient.
template <typename T>
void l2norm_rows_backward(float* din, const float* dout, const T* in, int64_t R, int64_t C, double eps,
                          cudaStream_t stream = 0);

}  // namespace sft::cuda
