#include "cpu/gemm.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/threads.h"

namespace sft::cpu {
namespace {

// Native SIMD width through GCC/Clang vector extensions: one source for AVX-512, AVX2 and SSE.
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#elif defined(__AVX__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif

template <typename T> struct Vec;
template <> struct Vec<float> { typedef float type __attribute__((vector_size(kVecBytes))); };
template <> struct Vec<double> { typedef double type __attribute__((vector_size(kVecBytes))); };

template <typename T>
inline typename Vec<T>::type load(const T* p) {
  typename Vec<T>::type v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
inline T hsum(typename Vec<T>::type v) {
  constexpr int W = kVecBytes / sizeof(T);
  T s = 0;
  for (int i = 0; i < W; i++) s += v[i];
  return s;
}

constexpr int MR = 4, NR = 4;  // register tile: 4 rows of A against 4 rows of B
constexpr int64_t KC = 512;    // K block: a 4xKC strip of A stays in L1
constexpr int64_t NC = 64;     // rows of B swept per A strip (B block stays in L2)

// One MR x NR tile of dot products over k in [0, kn). Full tiles take the unrolled path.
template <typename T>
inline void tile_full(int64_t kn, const T* A, int64_t lda, const T* B, int64_t ldb, T alpha, T beta,
                      T* C, int64_t ldc) {
  using V = typename Vec<T>::type;
  constexpr int W = kVecBytes / sizeof(T);
  V acc[MR][NR];
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NR; j++) acc[i][j] = V{} ;
  int64_t k = 0;
  for (; k + W <= kn; k += W) {
    V a[MR], b[NR];
    for (int i = 0; i < MR; i++) a[i] = load(A + i * lda + k);
    for (int j = 0; j < NR; j++) b[j] = load(B + j * ldb + k);
    for (int i = 0; i < MR; i++)
      for (int j = 0; j < NR; j++) acc[i][j] += a[i] * b[j];
  }
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NR; j++) {
      T s = hsum<T>(acc[i][j]);
      for (int64_t kk = k; kk < kn; kk++) s += A[i * lda + kk] * B[j * ldb + kk];
      T* c = C + i * ldc + j;
      *c = (beta == T(0) ? T(0) : beta * *c) + alpha * s;
    }
}

template <typename T>
inline void tile_edge(int mr, int nr, int64_t kn, const T* A, int64_t lda, const T* B, int64_t ldb,
                      T alpha, T beta, T* C, int64_t ldc) {
  using V = typename Vec<T>::type;
  constexpr int W = kVecBytes / sizeof(T);
  for (int i = 0; i < mr; i++)
    for (int j = 0; j < nr; j++) {
      V acc = V{};
      int64_t k = 0;
      for (; k + W <= kn; k += W) acc += load(A + i * lda + k) * load(B + j * ldb + k);
      T s = hsum<T>(acc);
      for (; k < kn; k++) s += A[i * lda + k] * B[j * ldb + k];
      T* c = C + i * ldc + j;
      *c = (beta == T(0) ? T(0) : beta * *c) + alpha * s;
    }
}

}  // namespace

template <typename T>
void gemm_nt(int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
             int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) C[m * ldc + n] = beta == T(0) ? T(0) : beta * C[m * ldc + n];
    return;
  }
  // Split the larger dimension across threads, in whole tiles.
  const bool split_m = (M / MR) >= (N / NR);
  const int64_t tiles = split_m ? (M + MR - 1) / MR : (N + NR - 1) / NR;
  const int64_t work_per_tile = (split_m ? N : M) * K;
  const int64_t grain = std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(1, work_per_tile));
  parallel_for(tiles, grain, [&](int64_t t0, int64_t t1) {
    int64_t m0 = split_m ? t0 * MR : 0, m1 = split_m ? std::min(M, t1 * MR) : M;
    int64_t n0 = split_m ? 0 : t0 * NR, n1 = split_m ? N : std::min(N, t1 * NR);
    for (int64_t kc = 0; kc < K; kc += KC) {
      const int64_t kn = std::min(KC, K - kc);
      const T b = kc == 0 ? beta : T(1);
      for (int64_t nb = n0; nb < n1; nb += NC) {
        const int64_t nbe = std::min(n1, nb + NC);
        for (int64_t m = m0; m < m1; m += MR) {
          const int mr = static_cast<int>(std::min<int64_t>(MR, m1 - m));
          for (int64_t n = nb; n < nbe; n += NR) {
            const int nr = static_cast<int>(std::min<int64_t>(NR, nbe - n));
            const T* a = A + m * lda + kc;
            const T* bb = B + n * ldb + kc;
            T* c = C + m * ldc + n;
            if (mr == MR && nr == NR) tile_full<T>(kn, a, lda, bb, ldb, alpha, b, c, ldc);
            else tile_edge<T>(mr, nr, kn, a, lda, bb, ldb, alpha, b, c, ldc);
          }
        }
      }
    }
  });
}

template <typename T>
void transpose(T* out, const T* in, int64_t rows, int64_t cols, int64_t ld_in) {
  constexpr int64_t BS = 32;  // cache-blocked so both sides stream
  const int64_t row_blocks = (rows + BS - 1) / BS;
  parallel_for(row_blocks, 8, [&](int64_t b0, int64_t b1) {
    for (int64_t rb = b0 * BS; rb < std::min(rows, b1 * BS); rb += BS)
      for (int64_t cb = 0; cb < cols; cb += BS)
        for (int64_t r = rb; r < std::min(rows, rb + BS); r++)
          for (int64_t c = cb; c < std::min(cols, cb + BS); c++) out[c * rows + r] = in[r * ld_in + c];
  });
}

template void gemm_nt<float>(int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                             int64_t, float, float*, int64_t);
template void gemm_nt<double>(int64_t, int64_t, int64_t, double, const double*, int64_t,
                              const double*, int64_t, double, double*, int64_t);
template void transpose<float>(float*, const float*, int64_t, int64_t, int64_t);
template void transpose<double>(double*, const double*, int64_t, int64_t, int64_t);

}  // namespace sft::cpu
