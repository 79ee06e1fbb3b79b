// gemm: a thin wrapper over cublasLtMatmul (when built with it) and the tiled fallback kernel.
//
// Row-major C[M,N] is column-major C^T[N,M] with the same ld, so cuBLAS computes
// C^T (N x M) = op(B) (N x K) * op(A)^T (K x M) (col_major_gemm below).
#include "cuda/gemm.cuh"
#include "cuda/common.cuh"

#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>

#ifdef SFT_HAVE_CUBLASLT
#include <cublasLt.h>

#include <map>
#include <tuple>
#endif

namespace sft::cuda {
namespace {

constexpr int BM = 64, BN = 64, BK = 16, kThreads = 256;

// 16 x 16 threads, each owning a 4 x 4 block of C at rows ty + 16 i, columns tx + 16 j (strided so
// that a warp's shared-memory reads are broadcasts or consecutive words).
template <typename T, typename TC>
__global__ void __launch_bounds__(kThreads)
    gemm_tiled_kernel(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const T* A, int64_t lda,
                      const T* B, int64_t ldb, float beta, TC* C, int64_t ldc) {
  __shared__ float As[BK][BM + 1], Bs[BK][BN + 1];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t m0 = int64_t(blockIdx.y) * BM, n0 = int64_t(blockIdx.x) * BN;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += BK) {
    // Each tile is read along its contiguous dimension (coalesced).
    for (int e = tid; e < BM * BK; e += kThreads) {
      const int mm = ta ? e % BM : e / BK, kk = ta ? e / BM : e % BK;
      const int64_t m = m0 + mm, k = k0 + kk;
      As[kk][mm] = m < M && k < K ? to_f32(ta ? A[k * lda + m] : A[m * lda + k]) : 0.f;
    }
    for (int e = tid; e < BN * BK; e += kThreads) {
      const int nn = tb ? e % BN : e / BK, kk = tb ? e / BN : e % BK;
      const int64_t n = n0 + nn, k = k0 + kk;
      Bs[kk][nn] = n < N && k < K ? to_f32(tb ? B[k * ldb + n] : B[n * ldb + k]) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; kk++) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; i++) a[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; j++) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t m = m0 + ty + 16 * i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int64_t n = n0 + tx + 16 * j;
      if (n >= N) continue;
      TC* c = C + m * ldc + n;
      const float old = beta != 0.f ? beta * to_f32(*c) : 0.f;
      *c = from_f32<TC>(alpha * acc[i][j] + old);
    }
  }
}

#ifdef SFT_HAVE_CUBLASLT

void lt_check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuBLASLt error ") + cublasLtGetStatusName(s) + " in " + what);
}

constexpr size_t kWorkspaceBytes = size_t(32) << 20;

struct LtDevice {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  // Heuristic results by problem (shape, layouts, types, alignments): the heuristic query costs
  // more than a small matmul.
  std::map<std::tuple<int, int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int>,
           std::pair<bool, cublasLtMatmulAlgo_t>>
      algos;
};

std::mutex lt_mutex;
LtDevice lt_devices[64];

LtDevice& lt_device() {
  int dev = 0;
  SFT_CUDA_CHECK(cudaGetDevice(&dev));
  LtDevice& d = lt_devices[dev & 63];
  if (!d.handle) {
    lt_check(cublasLtCreate(&d.handle), "cublasLtCreate");
    SFT_CUDA_CHECK(cudaMalloc(&d.workspace, kWorkspaceBytes));
  }
  return d;
}

// Largest power of two (up to 256) dividing the address: what cuBLASLt may assume.
uint32_t alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al) al /= 2;
  return al;
}

template <typename X>
constexpr cudaDataType_t lt_type() {
  return std::is_same<X, float>::value ? CUDA_R_32F : CUDA_R_16BF;
}

// Returns false when cuBLASLt has no algorithm for the problem (the caller falls back).
template <typename T, typename TC>
bool gemm_lt(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const T* A, int64_t lda, const T* B,
             int64_t ldb, float beta, TC* C, int64_t ldc, cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(lt_mutex);
  LtDevice& d = lt_device();
  const ColMajorGemm g = col_major_gemm(ta, tb, M, N, K, lda, ldb, ldc);
  const cublasOperation_t opa = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, opb = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  auto cleanup = [&] {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (desc) cublasLtMatmulDescDestroy(desc);
  };
  try {
    lt_check(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "MatmulDescCreate");
    lt_check(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)), "TRANSA");
    lt_check(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)), "TRANSB");
    lt_check(cublasLtMatrixLayoutCreate(&la, lt_type<T>(), g.a_rows, g.a_cols, g.lda), "layout A");
    lt_check(cublasLtMatrixLayoutCreate(&lb, lt_type<T>(), g.b_rows, g.b_cols, g.ldb), "layout B");
    lt_check(cublasLtMatrixLayoutCreate(&lc, lt_type<TC>(), g.m, g.n, g.ldc), "layout C");
    const uint32_t al_a = alignment(B), al_b = alignment(A), al_c = alignment(C);
    const auto key = std::make_tuple(int(ta) | int(tb) << 1, int(lt_type<T>()) << 8 | int(lt_type<TC>()), M, N, K,
                                     lda, ldb, ldc, int(al_a), int(al_b), int(al_c) | (beta != 0.f ? 1 << 16 : 0));
    auto it = d.algos.find(key);
    if (it == d.algos.end()) {
      lt_check(cublasLtMatmulPreferenceCreate(&pref), "PreferenceCreate");
      const size_t ws = kWorkspaceBytes;
      lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)),
               "pref workspace");
      lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, 4), "al A");
      lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, 4), "al B");
      lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, 4), "al C");
      lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, 4), "al D");
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      const cublasStatus_t s =
          cublasLtMatmulAlgoGetHeuristic(d.handle, desc, la, lb, lc, lc, pref, 1, &result, &found);
      const bool ok = s == CUBLAS_STATUS_SUCCESS && found > 0;
      it = d.algos.emplace(key, std::make_pair(ok, result.algo)).first;
      if (!ok)
        std::fprintf(stderr, "sft: cuBLASLt has no algorithm for gemm %lldx%lldx%lld (ta %d tb %d); using the tiled kernel\n",
                     (long long)M, (long long)N, (long long)K, int(ta), int(tb));
    }
    if (it->second.first)
      lt_check(cublasLtMatmul(d.handle, desc, &alpha, B, la, A, lb, &beta, C, lc, C, lc, &it->second.second,
                              d.workspace, kWorkspaceBytes, stream),
               "cublasLtMatmul");
    cleanup();
    return it->second.first;
  } catch (...) {
    cleanup();
    throw;
  }
}

#endif  // SFT_HAVE_CUBLASLT

}  // namespace

// cuBLAS's "A" is our B and its "B" our A:
//   tb = false: B row-major [N,K] = column-major K x N -> transa = T;  tb = true: N x K, transa = N
//   ta = false: A row-major [M,K] = column-major K x M -> transb = N;  ta = true: M x K, transb = T
ColMajorGemm col_major_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb,
                            int64_t ldc) {
  ColMajorGemm g;
  g.trans_a = !tb;
  g.trans_b = ta;
  g.m = N, g.n = M, g.k = K;
  g.a_rows = tb ? N : K, g.a_cols = tb ? K : N, g.lda = ldb;
  g.b_rows = ta ? M : K, g.b_cols = ta ? K : M, g.ldb = lda;
  g.ldc = ldc;
  return g;
}

template <typename T, typename TC>
void gemm_tiled(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const T* A, int64_t lda, const T* B,
                int64_t ldb, float beta, TC* C, int64_t ldc, cudaStream_t stream) {
  if (M <= 0 || N <= 0) return;
  const dim3 grid(unsigned((N + BN - 1) / BN), unsigned((M + BM - 1) / BM));
  SFT_LAUNCH(grid, kThreads, 0, stream, gemm_tiled_kernel<T, TC>)(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  SFT_CUDA_CHECK_LAUNCH("gemm_tiled");
}

template <typename T, typename TC>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, float beta, TC* C, int64_t ldc, cudaStream_t stream) {
  if (M <= 0 || N <= 0) return;
#ifdef SFT_HAVE_CUBLASLT
  if (K > 0 && gemm_lt<T, TC>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, stream)) return;
#endif
  gemm_tiled<T, TC>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, stream);
}

bool gemm_uses_cublaslt() {
#ifdef SFT_HAVE_CUBLASLT
  return true;
#else
  return false;
#endif
}

#define SFT_INSTANTIATE(T, TC)                                                                                  \
  template void gemm<T, TC>(bool, bool, int64_t, int64_t, int64_t, float, const T*, int64_t, const T*, int64_t, \
                            float, TC*, int64_t, cudaStream_t);                                                 \
  template void gemm_tiled<T, TC>(bool, bool, int64_t, int64_t, int64_t, float, const T*, int64_t, const T*,   \
                                  int64_t, float, TC*, int64_t, cudaStream_t);
SFT_INSTANTIATE(float, float)
SFT_INSTANTIATE(bf16, bf16)
SFT_INSTANTIATE(bf16, float)
#undef SFT_INSTANTIATE

}  // namespace sft::cuda
