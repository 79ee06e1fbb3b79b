// bf16 GEMM (cpu/gemm.h). Reference form: operands widened to fp32 (exact) and multiplied by the
// fp32 GEMM; the result rounded to bf16 once where C is bf16.
#include <vector>

#include "core/threads.h"
#include "cpu/gemm.h"

namespace sft::cpu {
namespace {

std::vector<float> widen(const bf16* x, int64_t rows, int64_t cols, int64_t ld) {
  std::vector<float> out(size_t(rows * cols));
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) out[size_t(r * cols + c)] = float(x[r * ld + c]);
  return out;
}

// op(X) stored as [rows, cols] (rows = the dimension that is not K when not transposed).
std::vector<float> widen_op(const bf16* X, bool trans, int64_t outer, int64_t K, int64_t ld) {
  return trans ? widen(X, K, outer, ld) : widen(X, outer, K, ld);
}

}  // namespace

void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16* A, int64_t lda, const bf16* B,
               int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  const std::vector<float> a = widen_op(A, ta, M, K, lda), b = widen_op(B, tb, N, K, ldb);
  gemm<float>(ta, tb, M, N, K, alpha, a.data(), ta ? M : K, b.data(), tb ? N : K, beta, C, ldc);
}

void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16* A, int64_t lda, const bf16* B,
               int64_t ldb, float beta, bf16* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  std::vector<float> c(size_t(M * N), 0.0f);
  if (beta != 0)
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) c[size_t(m * N + n)] = float(C[m * ldc + n]);
  gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, c.data(), N);
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) C[m * ldc + n] = bf16(c[size_t(m * N + n)]);
}

void gemm_q4_bf16(bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16* A, int64_t lda, const Nf4Weight& W,
                  float beta, bf16* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  const std::vector<float> a = widen(A, M, K, lda);
  std::vector<float> c(size_t(M * N), 0.0f);
  if (beta != 0)
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) c[size_t(m * N + n)] = float(C[m * ldc + n]);
  gemm_q4<float>(tb, M, N, K, alpha, a.data(), K, W, beta, c.data(), N);
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) C[m * ldc + n] = bf16(c[size_t(m * N + n)]);
}

}  // namespace sft::cpu
