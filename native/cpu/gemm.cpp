#include "cpu/gemm.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "core/threads.h"
#include "cpu/gemm_blocked.h"
#include "cpu/isa.h"
#include "cpu/quant.h"
#include "cpu/simd.h"

namespace sft::cpu {
using namespace detail;
// double's tile kernel (the finite-difference checks), and the tile of the kernels in use.
namespace {

constexpr int kMrD = 6;
constexpr int kNrD = 2 * (kVecBytes / int(sizeof(double)));

void tile_double(int64_t kc, const double* __restrict Ap, const double* __restrict Bp, double* __restrict C, int64_t ldc,
                 double alpha, double beta) {
  using V = Vec<double>::type;
  constexpr int W = kVecBytes / sizeof(double);
  V c0[kMrD], c1[kMrD];
  for (int i = 0; i < kMrD; i++) c0[i] = V{}, c1[i] = V{};
  for (int64_t k = 0; k < kc; k++) {
    const V b0 = vload(Bp + k * 2 * W), b1 = vload(Bp + k * 2 * W + W);
    for (int i = 0; i < kMrD; i++) {
      const double a = Ap[k * kMrD + i];
      c0[i] += a * b0;
      c1[i] += a * b1;
    }
  }
  for (int i = 0; i < kMrD; i++)
    for (int j = 0; j < 2 * W; j++) {
      const double v = j < W ? c0[i][j] : c1[i][j - W];
      C[i * ldc + j] = beta == 0 ? alpha * v : alpha * v + beta * C[i * ldc + j];
    }
}

template <typename T>
Tile<T, T> tile_kernel();
template <>
Tile<float, float> tile_kernel<float>() {
  const Kernels& k = kernels();
  return {k.mr, k.nr, 1, k.gemm_tile};
}
template <>
Tile<double, double> tile_kernel<double>() {
  return {kMrD, kNrD, 1, tile_double};
}

}  // namespace

namespace detail {
Blocking g_forced{0, 0, 0};

Blocking blocking(int mr, int nr, size_t elem, int64_t K) {
  if (g_forced.kc > 0) return g_forced;
  const CacheSizes& c = cache_sizes();
  // kc: the B strip (kc x nr) twice L1: it then streams from L2 while an A strip and C's tile stay
  // near, and C is read and written K / kc times instead of 4x as often (the strip in half of L1,
  // kc 128 for the avx512 fp32 kernel, gave 70-75 % of the FMA peak on one core; kc 512, ~80 %).
  const int64_t base = std::clamp<int64_t>(c.l1d * 2 / (nr * int64_t(elem)) / 16 * 16, 64, 512);
  // Then fitted to K: one block up to 1.5 x base (K = 768 as 512 + 256 passed a C wider than L2
  // twice: 1024 x 2048 x 768 ran 7 % slower than as one block), else equal blocks, a multiple of
  // 32 deep (every tile's k step divides 32), instead of whole blocks and a thin remainder.
  int64_t kc = base;
  if (K > 0) {
    const int64_t blocks = K <= base * 3 / 2 ? 1 : (K + base - 1) / base;
    kc = ((K + blocks - 1) / blocks + 31) / 32 * 32;
  }
  const int64_t mc = std::clamp<int64_t>(c.l2 / 2 / (kc * int64_t(elem)) / mr * mr, mr, 64 * mr);
  // nc from the base depth: a deeper single block should not also split N (A is packed once per N block).
  const int64_t nc = std::clamp<int64_t>(std::min<int64_t>(c.l3, 16 << 20) / 4 / (base * int64_t(elem)) / nr * nr, nr, 8192);
  return {kc, mc, nc};
}

}  // namespace detail

template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc) {
  if constexpr (std::is_same<T, float>::value) {
    if (M > 0 && M <= kGemvMaxM && !tb && N > 0 && K > 0) {
      const Kernels& k = kernels();
      gemv_driver(ta, M, N, K, alpha, A, lda,
                  [&](int64_t m, int64_t n0, int64_t n1, int64_t kk, const float* x, int64_t ldx, float* y, int64_t ldy,
                      float al, float be) { k.gemv_f32(m, n0, n1, kk, x, ldx, B, ldb, y, ldy, al, be); },
                  beta, C, ldc);
      return;
    }
  }
  if constexpr (std::is_same<T, float>::value) {
    if (skinny_gemm<float>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
  }
  const Tile<T, T> tk = tile_kernel<T>();
  gemm_driver(M, N, K, alpha, packer<T>(A, lda, ta, tk.mr), packer<T>(B, ldb, tb, tk.nr), (const T*)nullptr, tk,
              blocking(tk.mr, tk.nr, sizeof(T), K), beta, C, ldc);
}

template <typename T>
void gemm_q4(bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const Nf4Weight& W, T beta,
             T* C, int64_t ldc) {
  if constexpr (std::is_same<T, float>::value) {
    if (M > 0 && M <= kGemvMaxM && !tb && N > 0 && K > 0) {  // decode: rows of W decoded 64 at a time
      const Kernels& k = kernels();
      gemv_driver(false, M, N, K, alpha, A, lda,
                  [&](int64_t m, int64_t n0, int64_t n1, int64_t kk, const float* x, int64_t ldx, float* y, int64_t ldy,
                      float al, float be) {
                    static thread_local std::vector<float> rows64;  // (a heap allocation per call cost page faults)
                    float* w = scratch(rows64, size_t(64 * kk));
                    for (int64_t r0 = n0; r0 < n1; r0 += 64) {
                      const int64_t r1 = std::min(n1, r0 + 64);
                      for (int64_t r = r0; r < r1; r++) W.decode_row(w + (r - r0) * kk, r, 0, kk);
                      k.gemv_f32(m, 0, r1 - r0, kk, x, ldx, w, kk, y + r0, ldy, al, be);
                    }
                  },
                  beta, C, ldc);
      return;
    }
  }
  const Tile<T, T> tk = tile_kernel<T>();
  gemm_driver(M, N, K, alpha, packer<T>(A, lda, false, tk.mr),
              [&](T* dst, int64_t n0, int64_t n1, int64_t k0, int64_t kc, int64_t s0, int64_t s1) {
                pack_nf4<T>(dst, W, tb, tk.nr, n0, n1, k0, kc, s0, s1);
              },
              (const T*)nullptr, tk, blocking(tk.mr, tk.nr, sizeof(T), K), beta, C, ldc);
}

size_t gemm_packed_b_floats(int64_t N, int64_t K) {
  const int nr = kernels().nr;
  return size_t((N + nr - 1) / nr * nr) * size_t(K);
}

PackedB gemm_packed_layout(int64_t N, int64_t K) {
  const Tile<float, float> tk = tile_kernel<float>();
  const Blocking bl = blocking(tk.mr, tk.nr, sizeof(float), K);
  return {nullptr, N, K, tk.nr, bl.kc, bl.nc, kernels().name};
}

bool gemm_packed_current(const PackedB& B) {
  const PackedB now = gemm_packed_layout(B.N, B.K);
  return B.nr == now.nr && B.kc == now.kc && B.nc == now.nc;
}

void gemm_pack_b(PackedB& out, float* dst, bool tb, int64_t N, int64_t K, const float* B, int64_t ldb) {
  out = gemm_packed_layout(N, K);
  out.data = dst;
  const int nr = out.nr;
  for (int64_t jc = 0; jc < N; jc += out.nc) {
    const int64_t nc = std::min(out.nc, N - jc), nstrips = (nc + nr - 1) / nr;
    for (int64_t pc = 0; pc < K; pc += out.kc) {
      const int64_t kc = std::min(out.kc, K - pc);
      float* panel = dst + jc * K + nstrips * nr * pc;
      parallel_for(nstrips, 4, [&](int64_t s0, int64_t s1) { pack<float, float>(panel, B, ldb, tb, nr, jc, jc + nc, pc, kc, s0, s1); });
    }
  }
}

void gemm_prepacked(bool ta, int64_t M, float alpha, const float* A, int64_t lda, const PackedB& B, float beta, float* C,
                    int64_t ldc) {
  const Tile<float, float> tk = tile_kernel<float>();
  const Blocking bl = blocking(tk.mr, tk.nr, sizeof(float), B.K);
  if (!gemm_packed_current(B))
    throw std::logic_error(std::string("gemm_prepacked: B was packed for the ") + B.isa + " kernels, the " + kernels().name +
                           " kernels run now");
  if (M > 0 && M <= kGemvMaxM && !ta && B.K > 0) {
    // Decode: the panel GEMV streams each strip once for all M rows, with the tiles' sums (the
    // blocked driver below would pad M to an mr strip: 1.1-1.8x slower at M = 1-2).
    const Kernels& k = kernels();
    const int64_t strips = (B.N + tk.nr - 1) / tk.nr;
    // Strips are independent, so chunks may be small: four per thread, for balance on shared cores.
    parallel_for(strips, std::max<int64_t>(1, 65536 / (M * B.K * tk.nr)), [&](int64_t s0, int64_t s1) {
      k.gemv_panels(M, s0, s1, A, lda, B.data, B.N, B.K, B.kc, B.nc, C, ldc, alpha, beta);
    }, 4);
    return;
  }
  if (B.N <= tk.nr && M >= 2 * tk.mr && B.K <= 4096 && B.K > 0) {
    // gemm's skinny path: one strip of panels is the K x nr strip it packs, so the bits agree.
    const int64_t blocks = (M + tk.mr - 1) / tk.mr;
    parallel_for(blocks, M * B.N * B.K < (int64_t(1) << 17) ? blocks : 1, [&](int64_t b0, int64_t b1) {
      const int64_t r0 = b0 * tk.mr, r1 = std::min(M, b1 * tk.mr);
      kernels().gemm_skinny(r1 - r0, int(B.N), B.K, A + r0 * (ta ? 1 : lda), ta ? 1 : lda, ta ? lda : 1, B.data, C + r0 * ldc,
                            ldc, 1, alpha, beta);
    });
    return;
  }
  gemm_driver(M, B.N, B.K, alpha, packer<float>(A, lda, ta, tk.mr),
              [](float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t) {}, B.data, tk, bl, beta, C, ldc);
}

void gemv_half(bool bf16, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const uint16_t* W,
               int64_t ldw, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  const Kernels& k = kernels();
  gemv_driver(false, M, N, K, alpha, A, lda,
              [&](int64_t m, int64_t n0, int64_t n1, int64_t kk, const float* x, int64_t ldx, float* y, int64_t ldy,
                  float al, float be) { (bf16 ? k.gemv_bf16 : k.gemv_f16)(m, n0, n1, kk, x, ldx, W, ldw, y, ldy, al, be); },
              beta, C, ldc);
}

void set_gemm_blocking(int64_t kc, int64_t mc, int64_t nc) { g_forced = {kc, mc, nc}; }

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
