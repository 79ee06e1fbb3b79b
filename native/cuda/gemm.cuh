// Matrix products on the GPU, with cpu::gemm's conventions (cpu/gemm.h is the oracle): row-major,
//   C[m, n] = beta * C[m, n] + alpha * sum_k opA[m, k] * opB[n, k]
//   opA[m, k] = ta ? A[k*lda + m] : A[m*lda + k];   opB[n, k] = tb ? B[k*ldb + n] : B[n*ldb + k]
// so a linear layer's forward (x W^T) is ta = tb = false and its backward products are the
// transposed variants. A and B are T (float or bf16); C is TC (T, or float for bf16 inputs, e.g.
// fp32 LoRA gradients); accumulation is always fp32 (fp32 inputs: true fp32, no TF32). beta = 0
// never reads C.
//
// With SFT_HAVE_CUBLASLT (CMake finds cuBLASLt: the toolkit's, or SFT_CUBLAS_ROOT pointing at an
// unpacked nvidia-cublas wheel) gemm calls cublasLtMatmul with a per-device handle and a 32 MiB
// workspace (one stream at a time per device: the workspace is shared); otherwise, and whenever
// cuBLASLt offers no algorithm, it runs gemm_tiled, a plain shared-memory kernel (correct, slow).
// NOT YET RUN ON A GPU: checked only by test/cuda/test_kernels.cu, which needs one.
#pragma once
#include <cstdint>

#include "cuda/types.h"

namespace sft::cuda {

template <typename T, typename TC>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, float beta, TC* C, int64_t ldc, cudaStream_t stream = 0);

template <typename T, typename TC>
void gemm_tiled(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const T* A, int64_t lda, const T* B,
                int64_t ldb, float beta, TC* C, int64_t ldc, cudaStream_t stream = 0);

// True when this build calls cuBLASLt (what the benchmark reports).
bool gemm_uses_cublaslt();

// How gemm's row-major problem maps onto cuBLAS's column-major D (m x n) = op(A) (m x k) op(B)
// (k x n), with cuBLAS's A being our B and its B our A. gemm's cuBLASLt path builds its
// descriptors from this; it is public so the test can check the mapping on any machine.
struct ColMajorGemm {
  bool trans_a, trans_b;
  int64_t m, n, k;
  int64_t a_rows, a_cols, lda;  // stored (column-major) shape of cuBLAS's A and its leading dimension
  int64_t b_rows, b_cols, ldb;
  int64_t ldc;
};
ColMajorGemm col_major_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb,
                            int64_t ldc);

}  // namespace sft::cuda
