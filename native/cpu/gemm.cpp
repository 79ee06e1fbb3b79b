#include "cpu/gemm.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "core/threads.h"
#include "cpu/isa.h"
#include "cpu/quant.h"
#include "cpu/simd.h"

namespace sft::cpu {
namespace {

// BLIS-style blocking. The micro-kernel keeps an mr x nr block of C in registers and walks k over
// packed panels: A packed k-major in mr-row strips (broadcast), B packed k-major in nr-column strips
// (vector loads). Panels are zero-padded so edges need no special kernel: a partial tile is computed
// whole into a scratch tile and copied out. For fp32 the micro-kernel (and so mr, nr) is the one of
// the instruction set chosen at run time (cpu/isa.h); double, used by the finite-difference checks
// only, keeps a generic kernel compiled here.
template <typename T>
struct Tile {
  int mr, nr;
  void (*fn)(int64_t kc, const T* Ap, const T* Bp, T* C, int64_t ldc, T alpha, T beta);
};

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
Tile<T> tile_kernel();
template <>
Tile<float> tile_kernel<float>() {
  const Kernels& k = kernels();
  return {k.mr, k.nr, k.gemm_tile};
}
template <>
Tile<double> tile_kernel<double>() {
  return {kMrD, kNrD, tile_double};
}

// Blocking from the data caches: a kc x nr panel of B stays in half of L1 across the mc / mr strips
// of A, an mc x kc block of A in half of L2, the whole packed B block (nc x kc) in a slice of L3.
struct Blocking {
  int64_t kc, mc, nc;
};
Blocking g_forced{0, 0, 0};

Blocking blocking(int mr, int nr, size_t elem) {
  if (g_forced.kc > 0) return g_forced;
  const CacheSizes& c = cache_sizes();
  const int64_t kc = std::clamp<int64_t>(c.l1d / 2 / (nr * int64_t(elem)) / 16 * 16, 64, 512);
  const int64_t mc = std::clamp<int64_t>(c.l2 / 2 / (kc * int64_t(elem)) / mr * mr, mr, 64 * mr);
  const int64_t nc = std::clamp<int64_t>(std::min<int64_t>(c.l3, 16 << 20) / 4 / (kc * int64_t(elem)) / nr * nr, nr, 8192);
  return {kc, mc, nc};
}

// Packs rows r0..r1 (zero-padded to whole strips of R) of op(X), k in [k0, k0 + kc), into
// dst[(strip * kc + k) * R + i]. op(X)[r, k] = X[r * ld + k], or X[k * ld + r] when trans:
// this is where the transposed layouts of the backward products are absorbed, for free.
template <typename T>
void pack(T* dst, const T* X, int64_t ld, bool trans, int R, int64_t r0, int64_t r1, int64_t k0, int64_t kc, int64_t s0,
          int64_t s1) {
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
      // k in blocks of KB so the strided writes of one block (KB x R) stay in L1 while each of the
      // R source rows is read KB elements at a time (writing whole kc-long columns evicted the
      // panel between rows: this pack was a sixth of a training step).
      constexpr int64_t KB = 16;
      for (int64_t kb = 0; kb < kc; kb += KB) {
        const int64_t ke = std::min(kc, kb + KB);
        for (int i = 0; i < valid; i++) {
          const T* src = X + (rb + i) * ld + k0;
          for (int64_t k = kb; k < ke; k++) d[k * R + i] = src[k];
        }
        for (int i = valid; i < R; i++)
          for (int64_t k = kb; k < ke; k++) d[k * R + i] = T(0);
      }
    }
  }
}

// Scratch that lives as long as its thread: a packed A block per worker, the packed B panel of the
// calling thread (allocating them per call cost page faults on every GEMM).
template <typename T>
T* scratch(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.assign(n, T(0));
  return v.data();
}
template <typename T>
std::vector<T>& a_scratch() {
  static thread_local std::vector<T> v;
  return v;
}
template <typename T>
std::vector<T>& b_scratch() {
  static thread_local std::vector<T> v;
  return v;
}

// The blocked driver. packB(dst, n0, n1, k0, kc, s0, s1) fills strips [s0, s1) of one packed B
// panel; with `prepacked` the panels already exist (gemm_pack_b's layout) and packB is not called.
template <typename T, typename PackB>
void gemm_driver(bool ta, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const PackB& packB,
                 const T* prepacked, const Tile<T>& tk, const Blocking& bl, T beta, T* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) C[m * ldc + n] = beta == T(0) ? T(0) : beta * C[m * ldc + n];
    return;
  }
  const int mr = tk.mr, nr = tk.nr;
  const int64_t KC = bl.kc, NC = bl.nc;
  // Rows of A per block: at most the cache's, and few enough that every thread gets a block.
  const int threads = num_threads();
  const int64_t MC = std::max<int64_t>(mr, std::min(bl.mc, (M + threads - 1) / threads + mr - 1) / mr * mr);
  const int64_t mblocks = (M + MC - 1) / MC;
  T* Bp = prepacked ? nullptr : scratch(b_scratch<T>(), size_t(((std::min(N, NC) + nr - 1) / nr) * nr * KC));
  for (int64_t jc = 0; jc < N; jc += NC) {
    const int64_t nc = std::min(NC, N - jc);
    const int64_t nstrips = (nc + nr - 1) / nr;
    // Too few row blocks for the threads (a narrow M: LoRA's rank, tiny batches): split columns too.
    const int64_t nparts = std::min<int64_t>(nstrips, mblocks >= threads ? 1 : (threads + mblocks - 1) / mblocks);
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      const T b = pc == 0 ? beta : T(1);
      const T* panel;
      if (prepacked) {
        panel = prepacked + jc * K + nstrips * nr * pc;
      } else {
        parallel_for(nstrips, std::max<int64_t>(4, 16384 / (nr * kc)), [&](int64_t s0, int64_t s1) { packB(Bp, jc, jc + nc, pc, kc, s0, s1); });
        panel = Bp;
      }
      // A product too small to pay for waking the workers (~100k multiply-adds) runs on this thread.
      const int64_t items = mblocks * nparts;
      const int64_t grain = M * nc * kc < (int64_t(1) << 17) ? items : 1;
      parallel_for(items, grain, [&](int64_t w0, int64_t w1) {
        T* Ap = scratch(a_scratch<T>(), size_t(MC * kc));
        alignas(64) T tile[32 * 64];
        int64_t packed_ib = -1;
        for (int64_t w = w0; w < w1; w++) {
          const int64_t ib = w / nparts, part = w % nparts;
          const int64_t ic = ib * MC, mc = std::min(MC, M - ic);
          if (ib != packed_ib) pack<T>(Ap, A, lda, ta, mr, ic, ic + mc, pc, kc, 0, (mc + mr - 1) / mr), packed_ib = ib;
          const int64_t js0 = nstrips * part / nparts, js1 = nstrips * (part + 1) / nparts;
          for (int64_t js = js0; js < js1; js++) {
            const int64_t n0 = jc + js * nr, nn = std::min<int64_t>(nr, jc + nc - n0);
            for (int64_t is = 0; is * mr < mc; is++) {
              const int64_t m0 = ic + is * mr, mm = std::min<int64_t>(mr, ic + mc - m0);
              const T* ap = Ap + is * kc * mr;
              const T* bp = panel + js * kc * nr;
              if (mm == mr && nn == nr) {
                tk.fn(kc, ap, bp, C + m0 * ldc + n0, ldc, alpha, b);
                continue;
              }
              tk.fn(kc, ap, bp, tile, nr, T(1), T(0));
              for (int64_t i = 0; i < mm; i++) {
                T* c = C + (m0 + i) * ldc + n0;
                const T* t = tile + i * nr;
                if (b == T(0))
                  for (int64_t j = 0; j < nn; j++) c[j] = alpha * t[j];
                else
                  for (int64_t j = 0; j < nn; j++) c[j] = alpha * t[j] + b * c[j];
              }
            }
          }
        }
      });
    }
  }
}

// Packs NF4 weight tiles, decoding as it goes: op(W)[n, k] = W[n, k], or W[k, n] when trans.
template <typename T>
void pack_nf4(T* dst, const Nf4Weight& W, bool trans, int R, int64_t r0, int64_t r1, int64_t k0, int64_t kc, int64_t s0,
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

// GEMV: y = op(A) W^T for M <= kGemvMaxM rows, each weight read once, threads over groups of 4
// output rows (the kernels' grouping, so the result does not depend on the thread count).
// rows(W, n0, n1) gives the rows [n0, n1) of W as fp32 with their stride (decoding them if need be).
template <typename Rows>
void gemv_driver(bool ta, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const Rows& rows,
                 float beta, float* C, int64_t ldc) {
  const float* x = A;
  int64_t ldx = lda;
  std::vector<float> gathered;
  if (ta) {  // op(A) = A^T: M columns of A, gathered into rows
    gathered.resize(size_t(M * K));
    for (int64_t k = 0; k < K; k++)
      for (int64_t m = 0; m < M; m++) gathered[size_t(m * K + k)] = A[k * lda + m];
    x = gathered.data(), ldx = K;
  }
  const int64_t groups = (N + 3) / 4;
  // Rows are independent, so chunks may be small: four per thread, for balance on shared cores.
  parallel_for(groups, std::max<int64_t>(1, 16384 / (M * K)), [&](int64_t g0, int64_t g1) {
    rows(M, g0 * 4, std::min(N, g1 * 4), K, x, ldx, C, ldc, alpha, beta);
  }, 4);
}

// One side at most nr wide (LoRA's rank-r products: x A^T, dy B, and the adapter gradients dB and
// dA over all tokens): the narrow operand is packed into one k-major strip and the wide one is read
// in place by the skinny kernel, instead of packing the wide one (as large as the product's input)
// to fill tiles that are at most half used. A narrow M is the same product transposed: C^T = op(B)
// op(A)^T, stored through C's strides. Threads split the wide side in whole kernel row blocks; each
// element sums k in order, so the result does not depend on the thread count.
bool skinny_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const Kernels& kt = kernels();
  const int64_t nr = kt.nr, mr = kt.mr;
  if (K <= 0 || K > 4096) return false;  // the strip (K x nr) stays in L2
  // The narrow-M form only for weight gradients (both operands transposed: dW = dy^T x); B is then
  // an activation, never a frozen weight that gemm_prepacked could have packed (its panels are
  // not the skinny kernel's layout, and the two must agree bit for bit).
  const bool narrow_n = N <= nr && M >= 2 * mr, narrow_m = !narrow_n && ta && tb && M <= nr && N >= 2 * mr;
  if (!narrow_n && !narrow_m) return false;
  // Wide operand W[rows, k] = wide[row * sm + k * sk]; narrow operand packed from op(X) with n columns.
  const int64_t rows = narrow_n ? M : N, n = narrow_n ? N : M;
  const float* wide = narrow_n ? A : B;
  const bool wide_t = narrow_n ? ta : tb;
  const int64_t ldw = narrow_n ? lda : ldb;
  const int64_t sm = wide_t ? 1 : ldw, sk = wide_t ? ldw : 1;
  const int64_t rs = narrow_n ? ldc : 1, cs = narrow_n ? 1 : ldc;
  float* Bp = scratch(b_scratch<float>(), size_t(K * nr));
  if (narrow_n)
    pack<float>(Bp, B, ldb, tb, int(nr), 0, N, 0, K, 0, 1);
  else
    pack<float>(Bp, A, lda, ta, int(nr), 0, M, 0, K, 0, 1);
  const int64_t blocks = (rows + mr - 1) / mr;
  const int64_t grain = rows * n * K < (int64_t(1) << 17) ? blocks : 1;
  parallel_for(blocks, grain, [&](int64_t b0, int64_t b1) {
    const int64_t r0 = b0 * mr, r1 = std::min(rows, b1 * mr);
    kt.gemm_skinny(r1 - r0, int(n), K, wide + r0 * sm, sm, sk, Bp, C + r0 * rs, rs, cs, alpha, beta);
  });
  return true;
}

}  // namespace

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
    if (skinny_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
  }
  const Tile<T> tk = tile_kernel<T>();
  gemm_driver<T>(ta, M, N, K, alpha, A, lda,
                 [&](T* dst, int64_t n0, int64_t n1, int64_t k0, int64_t kc, int64_t s0, int64_t s1) {
                   pack<T>(dst, B, ldb, tb, tk.nr, n0, n1, k0, kc, s0, s1);
                 },
                 nullptr, tk, blocking(tk.mr, tk.nr, sizeof(T)), beta, C, ldc);
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
                    std::vector<float> w(size_t(64 * kk));
                    for (int64_t r0 = n0; r0 < n1; r0 += 64) {
                      const int64_t r1 = std::min(n1, r0 + 64);
                      for (int64_t r = r0; r < r1; r++) W.decode_row(w.data() + (r - r0) * kk, r, 0, kk);
                      k.gemv_f32(m, 0, r1 - r0, kk, x, ldx, w.data(), kk, y + r0, ldy, al, be);
                    }
                  },
                  beta, C, ldc);
      return;
    }
  }
  const Tile<T> tk = tile_kernel<T>();
  gemm_driver<T>(false, M, N, K, alpha, A, lda,
                 [&](T* dst, int64_t n0, int64_t n1, int64_t k0, int64_t kc, int64_t s0, int64_t s1) {
                   pack_nf4<T>(dst, W, tb, tk.nr, n0, n1, k0, kc, s0, s1);
                 },
                 nullptr, tk, blocking(tk.mr, tk.nr, sizeof(T)), beta, C, ldc);
}

size_t gemm_packed_b_floats(int64_t N, int64_t K) {
  const int nr = kernels().nr;
  return size_t((N + nr - 1) / nr * nr) * size_t(K);
}

void gemm_pack_b(PackedB& out, float* dst, bool tb, int64_t N, int64_t K, const float* B, int64_t ldb) {
  const Tile<float> tk = tile_kernel<float>();
  const Blocking bl = blocking(tk.mr, tk.nr, sizeof(float));
  out = {dst, N, K, tk.nr, bl.kc, bl.nc, kernels().name};
  for (int64_t jc = 0; jc < N; jc += bl.nc) {
    const int64_t nc = std::min(bl.nc, N - jc), nstrips = (nc + tk.nr - 1) / tk.nr;
    for (int64_t pc = 0; pc < K; pc += bl.kc) {
      const int64_t kc = std::min(bl.kc, K - pc);
      float* panel = dst + jc * K + nstrips * tk.nr * pc;
      parallel_for(nstrips, 4, [&](int64_t s0, int64_t s1) { pack<float>(panel, B, ldb, tb, tk.nr, jc, jc + nc, pc, kc, s0, s1); });
    }
  }
}

void gemm_prepacked(bool ta, int64_t M, float alpha, const float* A, int64_t lda, const PackedB& B, float beta, float* C,
                    int64_t ldc) {
  const Tile<float> tk = tile_kernel<float>();
  const Blocking bl = blocking(tk.mr, tk.nr, sizeof(float));
  if (B.nr != tk.nr || B.kc != bl.kc || B.nc != bl.nc)
    throw std::logic_error(std::string("gemm_prepacked: B was packed for the ") + B.isa + " kernels, the " + kernels().name +
                           " kernels run now");
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
  gemm_driver<float>(ta, M, B.N, B.K, alpha, A, lda, [](float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t) {},
                     B.data, tk, bl, beta, C, ldc);
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
