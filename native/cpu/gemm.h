// The CPU backend's one matrix-multiply kernel, and the transposes that bring the other
// layouts to it. Every linear layer (forward and both backward products) goes through gemm_nt.
#pragma once
#include <cstdint>

namespace sft::cpu {

// C[m, n] = beta * C[m, n] + alpha * sum_k A[m*lda + k] * B[n*ldb + k]
// "NT": both operands have K contiguous (row-major A [M,K], row-major B [N,K]), which is how
// activations [tokens, in] and weights [out, in] are stored. beta = 0 ignores C's old values.
template <typename T>
void gemm_nt(int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
             int64_t ldb, T beta, T* C, int64_t ldc);

// out[c, r] = in[r, c]: in is [rows, cols] with row stride ld_in; out is dense [cols, rows].
template <typename T>
void transpose(T* out, const T* in, int64_t rows, int64_t cols, int64_t ld_in);

}  // namespace sft::cpu
