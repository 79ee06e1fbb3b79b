// The blocked GEMM's parts, shared by the fp32 / double GEMM (gemm.cpp) and the bf16 one
// (gemm_bf16.cpp): the tile kernels' description, cache blocking, panel packing, thread-local
// scratch, the blocked driver, the GEMV driver (decode) and the skinny GEMM (LoRA's rank).
// Internal to native/cpu; the API is cpu/gemm.h.
#pragma once
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "core/threads.h"
#include "cpu/gemm.h"
#include "cpu/isa.h"
#include "cpu/quant.h"

namespace sft::cpu::detail {

// BLIS-style blocking. The micro-kernel keeps an mr x nr block of C in registers and walks k over
// packed panels: A packed k-major in mr-row strips (broadcast), B packed k-major in nr-column strips
// (vector loads). Panels are zero-padded so edges need no special kernel: a partial tile is computed
// whole into a scratch tile and copied out. For fp32 the micro-kernel (and so mr, nr) is the one of
// the instruction set chosen at run time (cpu/isa.h); double, used by the finite-difference checks
// only, keeps a generic kernel compiled here. P is the panels' element (float, double, or bf16 bits
// whose k runs in pairs: kstep 2), T the accumulator and C's type.
template <typename P, typename T>
struct Tile {
  int mr, nr, kstep;
  void (*fn)(int64_t kc, const P* Ap, const P* Bp, T* C, int64_t ldc, T alpha, T beta);
};

// Blocking from the data caches (gemm.cpp): a kc x nr strip of B reused across the mc / mr strips of
// A, an mc x kc block of A in half of L2, the whole packed B block (nc x kc) in a slice of L3.
struct Blocking {
  int64_t kc, mc, nc;
};
// The blocking for an mr x nr kernel over elements of `elem` bytes and a depth of K (set_gemm_blocking's,
// if set). Every product that packs or reads panels of one K takes its k blocks from here, so that
// prepacked panels, the GEMVs that mirror the blocked sums and the driver cut K alike.
Blocking blocking(int mr, int nr, size_t elem, int64_t K);

#if defined(__AVX2__)
// Eight rows of X (stride ld) by 8 k to k-major d[k * R + i], i < 8: one 8 x 8 transpose in
// registers (the scalar loop's strided single-float stores made packing a tenth of a GEMM).
__attribute__((always_inline)) inline void pack_8x8(const float* x, int64_t ld, float* d, int64_t R) {
  __m256 r[8], t[8], s[8];
  for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(x + i * ld);
  for (int i = 0; i < 8; i += 2) t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]), t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  // s[4h + c]: rows 4h..4h+3 of columns c (low half) and c + 4 (high half)
  for (int h = 0; h < 2; h++)
    for (int c = 0; c < 4; c++) {
      const __m256 a = t[4 * h + (c >> 1)], b = t[4 * h + 2 + (c >> 1)];
      s[4 * h + c] = (c & 1) ? _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2)) : _mm256_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0));
    }
  for (int c = 0; c < 4; c++) {
    _mm256_storeu_ps(d + c * R, _mm256_permute2f128_ps(s[c], s[4 + c], 0x20));
    _mm256_storeu_ps(d + (c + 4) * R, _mm256_permute2f128_ps(s[c], s[4 + c], 0x31));
  }
}
// Four rows by 8 k, as pack_8x8 (R = 12 strips: 8 + 4 rows).
__attribute__((always_inline)) inline void pack_4x8(const float* x, int64_t ld, float* d, int64_t R) {
  __m256 r[4], t[4];
  for (int i = 0; i < 4; i++) r[i] = _mm256_loadu_ps(x + i * ld);
  t[0] = _mm256_unpacklo_ps(r[0], r[1]), t[1] = _mm256_unpackhi_ps(r[0], r[1]);
  t[2] = _mm256_unpacklo_ps(r[2], r[3]), t[3] = _mm256_unpackhi_ps(r[2], r[3]);
  for (int c = 0; c < 4; c++) {
    const __m256 a = t[c >> 1], b = t[2 + (c >> 1)];
    const __m256 v = (c & 1) ? _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2)) : _mm256_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0));
    _mm_storeu_ps(d + c * R, _mm256_castps256_ps128(v));
    _mm_storeu_ps(d + (c + 4) * R, _mm256_extractf128_ps(v, 1));
  }
}
#endif

// Packs rows r0..r1 (zero-padded to whole strips of R) of op(X), k in [k0, k0 + kc), into
// dst[(strip * kc + k) * R + i]. op(X)[r, k] = X[r * ld + k], or X[k * ld + r] when trans:
// this is where the transposed layouts of the backward products are absorbed, for free. S is X's
// element, widened to T (bf16 to float is exact).
template <typename T, typename S>
void pack(T* dst, const S* X, int64_t ld, bool trans, int R, int64_t r0, int64_t r1, int64_t k0, int64_t kc, int64_t s0,
          int64_t s1) {
  for (int64_t s = s0; s < s1; s++) {
    T* d = dst + s * kc * R;
    const int64_t rb = r0 + s * R;
    const int valid = int(std::max<int64_t>(0, std::min<int64_t>(R, r1 - rb)));
    if (trans) {
      for (int64_t k = 0; k < kc; k++) {
        const S* src = X + (k0 + k) * ld + rb;
        int i = 0;
        for (; i < valid; i++) d[k * R + i] = T(src[i]);
        for (; i < R; i++) d[k * R + i] = T(0);
      }
    } else {
      // k in blocks of KB so the strided writes of one block (KB x R) stay in L1 while each of the
      // R source rows is read KB elements at a time (writing whole kc-long columns evicted the
      // panel between rows: this pack was a sixth of a training step).
      constexpr int64_t KB = 16;
      for (int64_t kb = 0; kb < kc; kb += KB) {
        const int64_t ke = std::min(kc, kb + KB);
        int i0 = 0;
#if defined(__AVX2__)
        if constexpr (std::is_same<T, float>::value && std::is_same<S, float>::value) {
          if (ke - kb == KB) {  // whole blocks: rows by 8 (then 4) through register transposes
            for (; i0 + 8 <= valid; i0 += 8)
              for (int64_t k = kb; k < ke; k += 8) pack_8x8(X + (rb + i0) * ld + k0 + k, ld, d + k * R + i0, R);
            for (; i0 + 4 <= valid; i0 += 4)
              for (int64_t k = kb; k < ke; k += 8) pack_4x8(X + (rb + i0) * ld + k0 + k, ld, d + k * R + i0, R);
          }
        }
#endif
        for (int i = i0; i < valid; i++) {
          const S* src = X + (rb + i) * ld + k0;
          for (int64_t k = kb; k < ke; k++) d[k * R + i] = T(src[k]);
        }
        for (int i = valid; i < R; i++)
          for (int64_t k = kb; k < ke; k++) d[k * R + i] = T(0);
      }
    }
  }
}

// The bf16 micro-kernel's panels (kernels.h, gemm_tile_bf16): as pack, with k in pairs, the two
// values of a pair side by side: dst[strip * 2 * pairs * R + (p * R + i) * 2 + e] = op(X)[rb + i,
// k0 + 2p + e], zero past kc (an odd kc) and past r1. Without transposition a pair is one 32-bit
// load from X's row.
inline void pack_pairs(uint16_t* dst, const bf16* Xb, int64_t ld, bool trans, int R, int64_t r0, int64_t r1, int64_t k0,
                int64_t kc, int64_t s0, int64_t s1) {
  const uint16_t* X = &Xb->bits;
  const int64_t pairs = (kc + 1) / 2, full = kc / 2;
  for (int64_t s = s0; s < s1; s++) {
    uint16_t* d = dst + s * pairs * 2 * R;
    const int64_t rb = r0 + s * R;
    const int valid = int(std::max<int64_t>(0, std::min<int64_t>(R, r1 - rb)));
    if (trans) {
      for (int64_t p = 0; p < pairs; p++) {
        const uint16_t* x0 = X + (k0 + 2 * p) * ld + rb;
        const uint16_t* x1 = x0 + ld;
        uint16_t* o = d + p * 2 * R;
        int i = 0;
        if (p < full)
          for (; i < valid; i++) o[2 * i] = x0[i], o[2 * i + 1] = x1[i];
        else
          for (; i < valid; i++) o[2 * i] = x0[i], o[2 * i + 1] = 0;
        for (; i < R; i++) o[2 * i] = 0, o[2 * i + 1] = 0;
      }
    } else {
      constexpr int64_t PB = 8;  // pairs per block, as pack's KB
      for (int64_t pb = 0; pb < pairs; pb += PB) {
        const int64_t pe = std::min(full, pb + PB);
        for (int i = 0; i < valid; i++) {
          const uint16_t* src = X + (rb + i) * ld + k0;
          for (int64_t p = pb; p < pe; p++) std::memcpy(d + (p * R + i) * 2, src + 2 * p, 4);
          if (pe < pb + PB && full < pairs) d[(full * R + i) * 2] = src[2 * full], d[(full * R + i) * 2 + 1] = 0;
        }
        for (int i = valid; i < R; i++)
          for (int64_t p = pb; p < std::min(pairs, pb + PB); p++) d[(p * R + i) * 2] = 0, d[(p * R + i) * 2 + 1] = 0;
      }
    }
  }
}

// Scratch that lives as long as its thread: a packed A block per worker, the packed B panel of the
// calling thread (allocating them per call cost page faults on every GEMM).
// The pointer is 64-byte aligned: the tile kernels' vector loads of packed panels then never
// straddle two cache lines (malloc's 16-byte alignment cost the AVX-512 GEMM ~5 %).
template <typename T>
T* scratch(std::vector<T>& v, size_t n) {
  constexpr size_t pad = 64 / sizeof(T);
  if (v.size() < n + pad) v.assign(n + pad, T(0));
  const uintptr_t p = reinterpret_cast<uintptr_t>(v.data());
  return reinterpret_cast<T*>((p + 63) / 64 * 64);
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

// The blocked driver. packA(dst, m0, m1, k0, kc, s0, s1) and packB(dst, n0, n1, k0, kc, s0, s1) fill
// strips [s0, s1) of one packed block of op(A) / panel of op(B) (each strip kc, rounded up to the
// kernel's kstep, deep); with `prepacked` the B panels already exist (gemm_pack_b's layout) and
// packB is not called.
template <typename P, typename T, typename PackA, typename PackB>
void gemm_driver(int64_t M, int64_t N, int64_t K, T alpha, const PackA& packA, const PackB& packB, const P* prepacked,
                 const Tile<P, T>& tk, const Blocking& bl, T beta, T* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) C[m * ldc + n] = beta == T(0) ? T(0) : beta * C[m * ldc + n];
    return;
  }
  const int mr = tk.mr, nr = tk.nr;
  const int64_t KC = bl.kc, NC = bl.nc;
  const auto deep = [&](int64_t kc) { return (kc + tk.kstep - 1) / tk.kstep * tk.kstep; };
  // Rows of A per block: at most about the cache's, in a number of blocks that the threads share
  // evenly (5 blocks of 252 rows for M = 1024 left one of two threads 3 of them).
  const int threads = num_threads();
  const int64_t strips = (M + mr - 1) / mr;
  const int64_t want = (strips * mr + bl.mc - 1) / bl.mc;
  const int64_t mblocks = std::min(strips, (want + threads - 1) / threads * threads);
  // Block ib: strips [ib strips / mblocks, (ib + 1) strips / mblocks), MC rows at most.
  const int64_t MC = (strips + mblocks - 1) / mblocks * mr;
  const auto block_start = [&](int64_t ib) { return std::min(M, ib * strips / mblocks * mr); };
  P* Bp = prepacked ? nullptr : scratch(b_scratch<P>(), size_t(((std::min(N, NC) + nr - 1) / nr) * nr * deep(KC)));
  for (int64_t jc = 0; jc < N; jc += NC) {
    const int64_t nc = std::min(NC, N - jc);
    const int64_t nstrips = (nc + nr - 1) / nr;
    // Too few row blocks for the threads (a narrow M: LoRA's rank, tiny batches): split columns too.
    const int64_t nparts = std::min<int64_t>(nstrips, mblocks >= threads ? 1 : (threads + mblocks - 1) / mblocks);
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc), kd = deep(kc);
      const T b = pc == 0 ? beta : T(1);
      const P* panel;
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
        P* Ap = scratch(a_scratch<P>(), size_t(MC * kd));
        alignas(64) T tile[32 * 64];
        int64_t packed_ib = -1;
        for (int64_t w = w0; w < w1; w++) {
          const int64_t ib = w / nparts, part = w % nparts;
          const int64_t ic = block_start(ib), mc = block_start(ib + 1) - ic;
          if (ib != packed_ib) packA(Ap, ic, ic + mc, pc, kc, 0, (mc + mr - 1) / mr), packed_ib = ib;
          const int64_t js0 = nstrips * part / nparts, js1 = nstrips * (part + 1) / nparts;
          for (int64_t js = js0; js < js1; js++) {
            const int64_t n0 = jc + js * nr, nn = std::min<int64_t>(nr, jc + nc - n0);
            for (int64_t is = 0; is * mr < mc; is++) {
              const int64_t m0 = ic + is * mr, mm = std::min<int64_t>(mr, ic + mc - m0);
              const P* ap = Ap + is * kd * mr;
              const P* bp = panel + js * kd * nr;
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

// packA for the driver: op(A) of a plain matrix, widened from S to the panels' T.
template <typename T, typename S = T>
auto packer(const S* X, int64_t ld, bool trans, int R) {
  return [=](T* dst, int64_t r0, int64_t r1, int64_t k0, int64_t kc, int64_t s0, int64_t s1) {
    pack<T, S>(dst, X, ld, trans, R, r0, r1, k0, kc, s0, s1);
  };
}

// Packs NF4 weight tiles, decoding as it goes: op(W)[n, k] = W[n, k], or W[k, n] when trans.
template <typename T>
void pack_nf4(T* dst, const Nf4Weight& W, bool trans, int R, int64_t r0, int64_t r1, int64_t k0, int64_t kc, int64_t s0,
              int64_t s1) {
  static thread_local std::vector<float> row_scratch;
  float* row = scratch(row_scratch, size_t(trans ? W.cols : kc));
  for (int64_t s = s0; s < s1; s++) {
    T* d = dst + s * kc * R;
    const int64_t rb = r0 + s * R;
    const int valid = int(std::max<int64_t>(0, std::min<int64_t>(R, r1 - rb)));
    if (trans) {  // rows of the panel are columns of W: decode W's rows k0.., take columns rb..
      for (int64_t k = 0; k < kc; k++) {
        W.decode_row(row, k0 + k, rb, valid);
        int i = 0;
        for (; i < valid; i++) d[k * R + i] = T(row[i]);
        for (; i < R; i++) d[k * R + i] = T(0);
      }
    } else {
      for (int i = 0; i < R; i++) {
        if (i < valid) {
          W.decode_row(row, rb + i, k0, kc);
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
template <typename S>
bool skinny_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const S* A, int64_t lda, const S* B,
                 int64_t ldb, float beta, float* C, int64_t ldc) {
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
  const S* wide = narrow_n ? A : B;
  const bool wide_t = narrow_n ? ta : tb;
  const int64_t ldw = narrow_n ? lda : ldb;
  const int64_t sm = wide_t ? 1 : ldw, sk = wide_t ? ldw : 1;
  const int64_t rs = narrow_n ? ldc : 1, cs = narrow_n ? 1 : ldc;
  float* Bp = scratch(b_scratch<float>(), size_t(K * nr));
  if (narrow_n)
    pack<float, S>(Bp, B, ldb, tb, int(nr), 0, N, 0, K, 0, 1);
  else
    pack<float, S>(Bp, A, lda, ta, int(nr), 0, M, 0, K, 0, 1);
  const int64_t blocks = (rows + mr - 1) / mr;
  const int64_t grain = rows * n * K < (int64_t(1) << 17) ? blocks : 1;
  parallel_for(blocks, grain, [&](int64_t b0, int64_t b1) {
    const int64_t r0 = b0 * mr, r1 = std::min(rows, b1 * mr);
    if constexpr (std::is_same<S, float>::value)
      kt.gemm_skinny(r1 - r0, int(n), K, wide + r0 * sm, sm, sk, Bp, C + r0 * rs, rs, cs, alpha, beta);
    else
      kt.gemm_skinny_bf16(r1 - r0, int(n), K, &wide[r0 * sm].bits, sm, sk, Bp, C + r0 * rs, rs, cs, alpha, beta);
  });
  return true;
}

}  // namespace sft::cpu::detail
