// The CPU backend's one matrix-multiply kernel, and the transposes that bring the other
// layouts to it. Every linear layer (forward and both backward products) goes through gemm_nt.
// fp32 runs the SIMD kernels chosen at run time for this CPU (cpu/isa.h); up to kGemvMaxM rows of
// A with op(B) = B (decode: x W^T at batch 1) take a GEMV path that reads each weight once.
#pragma once
#include <cstddef>
#include <cstdint>

#include "cpu/bf16.h"

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

// op(B) packed once into the fp32 GEMM's panel layout (a frozen weight reused by every call):
// round_up(N, nr) * K floats that the caller owns. The layout belongs to the kernels that packed it
// (nr) and the blocking (kc, nc); gemm_prepacked refuses panels packed for other kernels.
struct PackedB {
  const float* data = nullptr;
  int64_t N = 0, K = 0;
  int nr = 0;
  int64_t kc = 0, nc = 0;
  const char* isa = "";
};
size_t gemm_packed_b_floats(int64_t N, int64_t K);
// The layout gemm_pack_b packs in with the kernels and blocking in use now (data null), and whether
// B's panels are in it (gemm_prepacked refuses panels that are not).
PackedB gemm_packed_layout(int64_t N, int64_t K);
bool gemm_packed_current(const PackedB& B);
void gemm_pack_b(PackedB& out, float* dst, bool tb, int64_t N, int64_t K, const float* B, int64_t ldb);
// gemm(ta, tb, M, B.N, B.K, ...) with B's panels as packed: the same result, bit for bit, as the
// blocked GEMM, for every M: up to kGemvMaxM rows of A (decode) take the panel GEMV
// (kernels.h gemv_panels), which sums each element as the GEMM's tiles do (for alpha 1 and beta 0
// or 1, what linear layers use), so a row's bits do not depend on M. (gemm itself takes the
// row-major GEMV at those M: equal to these within rounding, not bit for bit.)
void gemm_prepacked(bool ta, int64_t M, float alpha, const float* A, int64_t lda, const PackedB& B, float beta, float* C,
                    int64_t ldc);

// C[m, n] = beta C + alpha sum_k A[m, k] W[n, k] with W in bf16 (bf16 = true) or IEEE f16 bits, fp32
// accumulation, W streamed once: half the bytes of an fp32 weight for batch-1 decode. Any M
// (in slices of kGemvMaxM rows, each reading W again).
void gemv_half(bool bf16, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const uint16_t* W,
               int64_t ldw, float beta, float* C, int64_t ldc);

// bf16 operands (CpuBackend<bf16>), fp32 accumulation, gemm's conventions: C[m, n] = beta C + alpha
// sum_k opA[m, k] opB[n, k], with C in float (gradients) or bf16 (activations; each element rounded
// once, from the fp32 result of the whole sum). gemm_bf16.cpp holds the kernels.
void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16* A, int64_t lda, const bf16* B,
               int64_t ldb, float beta, float* C, int64_t ldc);
void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16* A, int64_t lda, const bf16* B,
               int64_t ldb, float beta, bf16* C, int64_t ldc);
// gemm_q4 with bf16 activations A and output C (QLoRA in bf16).
void gemm_q4_bf16(bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16* A, int64_t lda, const Nf4Weight& W,
                  float beta, bf16* C, int64_t ldc);

// Tests and tuning: fixed blocking (kc, mc, nc) instead of the caches' (0, 0, 0 restores them).
void set_gemm_blocking(int64_t kc, int64_t mc, int64_t nc);

// out[c, r] = in[r, c]: in is [rows, cols] with row stride ld_in; out is dense [cols, rows].
template <typename T>
void transpose(T* out, const T* in, int64_t rows, int64_t cols, int64_t ld_in);

}  // namespace sft::cpu
