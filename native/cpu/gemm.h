// The CPU backend's one matrix-multiply kernel, and the transposes that bring the other
// layouts to it. Every linear layer (forward and both backward products) goes through gemm_nt.
#pragma once
#include <cstdint>

namespace sft::cpu {

// C[m, n] = beta * C[m, n] + alpha * sum_k opA[m, k] * opB[n, k]
//   opA[m, k] = ta ? A[k*lda + m] : A[m*lda + k]      (A stored [M,K], or [K,M] when ta)
//   opB[n, k] = tb ? B[k*ldb + n] : B[n*ldb + k]      (B stored [N,K], or [K,N] when tb)
// The default (ta = tb = false) is activations [tokens, in] times weights [out, in]^T; the
// backward products are the transposed variants. beta = 0 ignores C's old values.
template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc);

struct Nf4Weight;
// gemm with B an NF4-quantized weight W [rows, cols], decoded tile by tile while packing (no
// dequantized copy of W exists): opB[n, k] = W[n, k] (tb = false, forward: x W^T) or W[k, n]
// (tb = true, input gradient: dy W).
template <typename T>
void gemm_q4(bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const Nf4Weight& W, T beta,
             T* C, int64_t ldc);

template <typename T>
inline void gemm_nt(int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                    int64_t ldb, T beta, T* C, int64_t ldc) {
  gemm<T>(false, false, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// out[c, r] = in[r, c]: in is [rows, cols] with row stride ld_in; out is dense [cols, rows].
template <typename T>
void transpose(T* out, const T* in, int64_t rows, int64_t cols, int64_t ld_in);

}  // namespace sft::cpu
