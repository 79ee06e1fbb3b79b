#include "cpu/gemm.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/threads.h"
#include "cpu/quant.h"
#include "cpu/simd.h"

namespace sft::cpu {
namespace {

// BLIS-style blocking. The micro-kernel keeps an MR x NR block of C in registers (NR = two
// SIMD vectors) and walks k over packed panels: A packed k-major in MR-row strips (broadcast),
// B packed k-major in NR-column strips (vector loads). Panels are zero-padded so edges need no
// special kernel: a partial tile is computed whole into a scratch tile and copied out.
constexpr int MR = kVecBytes == 64 ? 8 : 6;  // 2*MR accumulators: 16 of 32 zmm, 12 of 16 ymm
constexpr int64_t KC = 256;  // depth of a packed panel
constexpr int64_t MC = 96;   // rows of A per packed block (MC x KC stays in L2)
constexpr int64_t NC = 1024; // columns (rows of B) per packed block

template <typename T>
constexpr int NR = 2 * (kVecBytes / int(sizeof(T)));

template <typename T>
inline void micro_kernel(int64_t kc, const T* __restrict Ap, const T* __restrict Bp, T* __restrict Ct) {
  using V = typename Vec<T>::type;
  constexpr int W = kVecBytes / sizeof(T);
  V c0[MR], c1[MR];
  for (int i = 0; i < MR; i++) c0[i] = V{}, c1[i] = V{};
  for (int64_t k = 0; k < kc; k++) {
    const V b0 = vload(Bp + k * 2 * W), b1 = vload(Bp + k * 2 * W + W);
    for (int i = 0; i < MR; i++) {
      const T a = Ap[k * MR + i];
      c0[i] += a * b0;
      c1[i] += a * b1;
    }
  }
  for (int i = 0; i < MR; i++) {
    std::memcpy(Ct + i * 2 * W, &c0[i], sizeof(V));
    std::memcpy(Ct + i * 2 * W + W, &c1[i], sizeof(V));
  }
}

// Packs rows r0..r1 (zero-padded to whole strips of R) of op(X), k in [k0, k0 + kc), into
// dst[(strip * kc + k) * R + i]. op(X)[r, k] = X[r * ld + k], or X[k * ld + r] when trans:
// this is where the transposed layouts of the backward products are absorbed, for free.
template <typename T, int R>
void pack(T* dst, const T* X, int64_t ld, bool trans, int64_t r0, int64_t r1, int64_t k0, int64_t kc,
          int64_t s0, int64_t s1) {
  for (int64_t s = s0; s < s1; s++) {
    T* d = dst + s * kc * R;
    const int64_t rb = r0 + s * R;
    const int valid = int(std::max<int64_t>(0, std::min<int64_t>(R, r1 - rb)));
    if (trans) {
      for (int64_t k = 0; k < kc; k++) {
        const T* src = X + (k0 + k) * ld + rb;
        int i = 0;
        for (; i < valid; i++) d[k * R + i] = src[i];
        for (; i < R; i++) d[k * R + i] = T(0);
      }
    } else {
      for (int i = 0; i < R; i++) {
        if (i < valid) {
          const T* src = X + (rb + i) * ld + k0;
          for (int64_t k = 0; k < kc; k++) d[k * R + i] = src[k];
        } else {
          for (int64_t k = 0; k < kc; k++) d[k * R + i] = T(0);
        }
      }
    }
  }
}

// The blocked driver; PackB fills one packed B panel: packB(dst, n0, n1, k0, kc, s0, s1).
template <typename T, typename PackB>
void gemm_driver(bool ta, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const PackB& packB,
                 T beta, T* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) C[m * ldc + n] = beta == T(0) ? T(0) : beta * C[m * ldc + n];
    return;
  }
  constexpr int nr = NR<T>;
  std::vector<T> Bp(size_t(((std::min(N, NC) + nr - 1) / nr) * nr * KC));
  for (int64_t jc = 0; jc < N; jc += NC) {
    const int64_t nc = std::min(NC, N - jc);
    const int64_t nstrips = (nc + nr - 1) / nr;
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      const T b = pc == 0 ? beta : T(1);
      parallel_for(nstrips, 4, [&](int64_t s0, int64_t s1) { packB(Bp.data(), jc, jc + nc, pc, kc, s0, s1); });
      const int64_t mblocks = (M + MC - 1) / MC;
      // Threads split the rows of C; each packs its own A block and shares the packed B.
      parallel_for(mblocks, 1, [&](int64_t b0, int64_t b1) {
        std::vector<T> Ap(size_t(MC * kc));
        alignas(64) T tile[MR * nr];
        for (int64_t ib = b0; ib < b1; ib++) {
          const int64_t ic = ib * MC, mc = std::min(MC, M - ic);
          pack<T, MR>(Ap.data(), A, lda, ta, ic, ic + mc, pc, kc, 0, (mc + MR - 1) / MR);
          for (int64_t js = 0; js < nstrips; js++) {
            const int64_t n0 = jc + js * nr, nn = std::min<int64_t>(nr, jc + nc - n0);
            for (int64_t is = 0; is * MR < mc; is++) {
              const int64_t m0 = ic + is * MR, mm = std::min<int64_t>(MR, ic + mc - m0);
              micro_kernel<T>(kc, Ap.data() + is * kc * MR, Bp.data() + js * kc * nr, tile);
              for (int64_t i = 0; i < mm; i++) {
                T* c = C + (m0 + i) * ldc + n0;
                const T* t = tile + i * nr;
                if (b == T(0))
                  for (int64_t j = 0; j < nn; j++) c[j] = alpha * t[j];
                else
                  for (int64_t j = 0; j < nn; j++) c[j] = b * c[j] + alpha * t[j];
              }
            }
          }
        }
      });
    }
  }
}

// Packs NF4 weight tiles, decoding as it goes: op(W)[n, k] = W[n, k], or W[k, n] when trans.
template <typename T, int R>
void pack_nf4(T* dst, const Nf4Weight& W, bool trans, int64_t r0, int64_t r1, int64_t k0, int64_t kc, int64_t s0,
              int64_t s1) {
  std::vector<float> row(size_t(trans ? W.cols : kc));
  for (int64_t s = s0; s < s1; s++) {
    T* d = dst + s * kc * R;
    const int64_t rb = r0 + s * R;
    const int valid = int(std::max<int64_t>(0, std::min<int64_t>(R, r1 - rb)));
    if (trans) {  // rows of the panel are columns of W: decode W's rows k0.., take columns rb..
      for (int64_t k = 0; k < kc; k++) {
        W.decode_row(row.data(), k0 + k, rb, valid);
        int i = 0;
        for (; i < valid; i++) d[k * R + i] = T(row[i]);
        for (; i < R; i++) d[k * R + i] = T(0);
      }
    } else {
      for (int i = 0; i < R; i++) {
        if (i < valid) {
          W.decode_row(row.data(), rb + i, k0, kc);
          for (int64_t k = 0; k < kc; k++) d[k * R + i] = T(row[k]);
        } else {
          for (int64_t k = 0; k < kc; k++) d[k * R + i] = T(0);
        }
      }
    }
  }
}

}  // namespace

template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc) {
  constexpr int nr = NR<T>;
  gemm_driver<T>(ta, M, N, K, alpha, A, lda,
                 [&](T* dst, int64_t n0, int64_t n1, int64_t k0, int64_t kc, int64_t s0, int64_t s1) {
                   pack<T, nr>(dst, B, ldb, tb, n0, n1, k0, kc, s0, s1);
                 },
                 beta, C, ldc);
}

template <typename T>
void gemm_q4(bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const Nf4Weight& W, T beta,
             T* C, int64_t ldc) {
  constexpr int nr = NR<T>;
  gemm_driver<T>(false, M, N, K, alpha, A, lda,
                 [&](T* dst, int64_t n0, int64_t n1, int64_t k0, int64_t kc, int64_t s0, int64_t s1) {
                   pack_nf4<T, nr>(dst, W, tb, n0, n1, k0, kc, s0, s1);
                 },
                 beta, C, ldc);
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

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                          int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);
template void gemm_q4<float>(bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const Nf4Weight&, float,
                             float*, int64_t);
template void gemm_q4<double>(bool, int64_t, int64_t, int64_t, double, const double*, int64_t, const Nf4Weight&,
                              double, double*, int64_t);
template void transpose<float>(float*, const float*, int64_t, int64_t, int64_t);
template void transpose<double>(double*, const double*, int64_t, int64_t, int64_t);

}  // namespace sft::cpu
