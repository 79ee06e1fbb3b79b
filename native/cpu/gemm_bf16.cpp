// bf16 GEMM (cpu/gemm.h): bf16 operands, fp32 accumulation.
//   - Where the kernels have a bf16 micro-kernel (avx512bf16: vdpbf16ps), both operands are packed as
//     bf16 with k in pairs and multiplied by it: half the bytes of fp32 panels, twice the
//     multiply-adds per instruction.
//   - Elsewhere (portable, avx2, avx512) packing widens bf16 to fp32 (exact) into the fp32 kernels'
//     panels; the products are then the fp32 GEMM's.
//   - Up to kGemvMaxM rows of A with op(B) = B (decode) take the GEMV, the bf16 weight streamed once:
//     vdpbf16ps on bf16 x and W where the kernels have it (gemv_bf16x), else the x rows widened and
//     the kernels' gemv_bf16.
//   - One side at most nr wide (LoRA's rank) takes the skinny kernel, reading the wide bf16 operand in
//     place and widening as it goes.
// C in bf16: the fp32 result of the whole sum is computed into a scratch block of rows (beta applied
// in fp32 to the widened old C) and rounded once into C.
#include <algorithm>
#include <cstring>
#include <vector>

#include "core/threads.h"
#include "cpu/gemm.h"
#include "cpu/gemm_blocked.h"
#include "cpu/isa.h"
#include "cpu/quant.h"

namespace sft::cpu {
using namespace detail;
namespace {

// op(A)'s M rows as dense fp32 rows [M, K] in this thread's scratch (the GEMV's x).
const float* widen_rows(bool ta, int64_t M, int64_t K, const bf16* A, int64_t lda) {
  static thread_local std::vector<float> x;
  float* d = scratch(x, size_t(M * K));
  for (int64_t m = 0; m < M; m++)
    for (int64_t k = 0; k < K; k++) d[m * K + k] = float(ta ? A[k * lda + m] : A[m * lda + k]);
  return d;
}

// The fp32 result of C = beta C + alpha (...), computed block by block by product(m0, mm, n0, nn,
// c, ldc) into scratch (beta applied there to the widened old C) and rounded once into the bf16 C.
// Blocks of at most kCap floats (8 MiB) whatever the shape: whole rows while N is at most kCap / 256,
// each block >= 256 rows (each packs op(B) again: a small share of its multiply-adds); a wider C
// (a vocabulary's logits) in 256-row blocks of >= 8192 columns. `cols` false: whole rows only.
constexpr int64_t kCap = int64_t(2) << 20;
template <typename Product>
void round_into(int64_t M, int64_t N, float beta, bf16* C, int64_t ldc, bool cols, const Product& product) {
  static thread_local std::vector<float> c32;
  const int64_t cn = cols ? std::min(N, std::max<int64_t>(1, kCap / std::min<int64_t>(M, 256))) : N;
  const int64_t rows = std::min(M, std::max<int64_t>(cols ? 1 : 256, kCap / cn));
  float* c = scratch(c32, size_t(rows * cn));
  for (int64_t m0 = 0; m0 < M; m0 += rows)
    for (int64_t n0 = 0; n0 < N; n0 += cn) {
      const int64_t mm = std::min(rows, M - m0), nn = std::min(cn, N - n0);
      // The widening and the rounding on every thread too (this pass costs 2-15 % of a 1024-row call).
      const int64_t grain = std::max<int64_t>(1, 16384 / nn);
      if (beta != 0)
        parallel_for(mm, grain, [&](int64_t r0, int64_t r1) {
          for (int64_t m = r0; m < r1; m++)
            for (int64_t n = 0; n < nn; n++) c[m * nn + n] = float(C[(m0 + m) * ldc + n0 + n]);
        });
      product(m0, mm, n0, nn, c, nn);
      parallel_for(mm, grain, [&](int64_t r0, int64_t r1) {
        for (int64_t m = r0; m < r1; m++)
          for (int64_t n = 0; n < nn; n++) C[(m0 + m) * ldc + n0 + n] = bf16(c[m * nn + n]);
      });
    }
}

// The AMX micro-kernel's panels (kernels.h, kstep16 32): strips of 32 rows of op(X), k padded to
// blocks of 32, two 1 KiB tiles per operand and block: rows 0-15 and 16-31. A (pairs false):
// tile row i holds op(X)[i, 32b .. 32b + 31]. B (pairs true): tile row p holds the 16 columns'
// k-pair (32b + 2p, 32b + 2p + 1), the pairs side by side. Zero past r1 and past kc.
constexpr int kAmxK = 32;
void pack_amx(uint16_t* dst, const bf16* Xb, int64_t ld, bool trans, bool pairs, int64_t r0, int64_t r1, int64_t k0,
              int64_t kc, int64_t s0, int64_t s1) {
  const uint16_t* X = &Xb->bits;
  const int64_t blocks = (kc + kAmxK - 1) / kAmxK;
  // Element (row i, k kk) of block b within a strip's 32 * 32 * blocks elements.
  const auto at = [pairs](int64_t b, int i, int kk) {
    return b * 1024 + (i / 16) * 512 + (pairs ? (kk / 2) * 32 + (i % 16) * 2 + (kk & 1) : (i % 16) * 32 + kk);
  };
  for (int64_t s = s0; s < s1; s++) {
    uint16_t* d = dst + s * blocks * 1024;
    const int64_t rb = r0 + s * 32;
    const int valid = int(std::max<int64_t>(0, std::min<int64_t>(32, r1 - rb)));
    if (valid < 32 || kc % kAmxK) std::memset(d, 0, size_t(blocks) * 1024 * sizeof(uint16_t));
    for (int64_t b = 0; b < blocks; b++) {
      const int ke = int(std::min<int64_t>(kAmxK, kc - b * kAmxK));
      if (trans) {  // op(X)[i, k] = X[k * ld + i]: row k of X holds the strip's 32 values of one k
        for (int kk = 0; kk < ke; kk++) {
          const uint16_t* src = X + (k0 + b * kAmxK + kk) * ld + rb;
          for (int i = 0; i < valid; i++) d[at(b, i, kk)] = src[i];
        }
      } else if (!pairs) {  // A without transposition: 32 contiguous k of a row are one tile row
        for (int i = 0; i < valid; i++)
          std::memcpy(d + at(b, i, 0), X + (rb + i) * ld + k0 + b * kAmxK, size_t(ke) * sizeof(uint16_t));
      } else {  // B without transposition: each k-pair of a row is one 32-bit move
        for (int i = 0; i < valid; i++) {
          const uint16_t* src = X + (rb + i) * ld + k0 + b * kAmxK;
          int kk = 0;
          for (; kk + 1 < ke; kk += 2) std::memcpy(d + at(b, i, kk), src + kk, 4);
          if (kk < ke) d[at(b, i, kk)] = src[kk];
        }
      }
    }
  }
}

// op(X) from row m0 on: op(X)[m, k] = trans ? X[k * ld + m] : X[m * ld + k].
const bf16* rows_of(const bf16* X, bool trans, int64_t ld, int64_t m0) { return X + (trans ? m0 : m0 * ld); }

}  // namespace

void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16* A, int64_t lda, const bf16* B,
               int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  const Kernels& k = kernels();
  if (M <= kGemvMaxM && !tb && K > 0) {
    const uint16_t* W = &B->bits;
    if (k.gemv_bf16x) {  // x stays bf16: vdpbf16ps on both
      const uint16_t* x = &A->bits;
      int64_t ldx = lda;
      if (ta) {  // op(A) = A^T: M columns of A, gathered into rows
        static thread_local std::vector<uint16_t> g;
        uint16_t* d = scratch(g, size_t(M * K));
        for (int64_t m = 0; m < M; m++)
          for (int64_t kk = 0; kk < K; kk++) d[m * K + kk] = A[kk * lda + m].bits;
        x = d, ldx = K;
      }
      const int64_t groups = (N + 3) / 4;
      parallel_for(groups, std::max<int64_t>(1, 16384 / (M * K)), [&](int64_t g0, int64_t g1) {
        k.gemv_bf16x(M, g0 * 4, std::min(N, g1 * 4), K, x, ldx, W, ldb, C, ldc, alpha, beta);
      }, 4);
      return;
    }
    const float* x = widen_rows(ta, M, K, A, lda);
    gemv_driver(false, M, N, K, alpha, x, K,
                [&](int64_t m, int64_t n0, int64_t n1, int64_t kk, const float* xx, int64_t ldx, float* y, int64_t ldy,
                    float al, float be) { k.gemv_bf16(m, n0, n1, kk, xx, ldx, W, ldb, y, ldy, al, be); },
                beta, C, ldc);
    return;
  }
  if (skinny_gemm<bf16>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
  if (k.gemm_tile_bf16) {
    const Tile<uint16_t, float> tk{k.mr16, k.nr16, k.kstep16, k.gemm_tile_bf16};
    const bool amx = k.kstep16 == kAmxK;  // the panels' layout (kernels.h): AMX tiles or k-pairs
    const auto panels = [amx](const bf16* X, int64_t ld, bool trans, int R, bool is_b) {
      return [=](uint16_t* dst, int64_t r0, int64_t r1, int64_t k0, int64_t kc, int64_t s0, int64_t s1) {
        if (amx)
          pack_amx(dst, X, ld, trans, is_b, r0, r1, k0, kc, s0, s1);
        else
          pack_pairs(dst, X, ld, trans, R, r0, r1, k0, kc, s0, s1);
      };
    };
    gemm_driver(M, N, K, alpha, panels(A, lda, ta, tk.mr, false), panels(B, ldb, tb, tk.nr, true),
                (const uint16_t*)nullptr, tk, blocking(tk.mr, tk.nr, sizeof(uint16_t), K), beta, C, ldc);
    return;
  }
  const Tile<float, float> tk{k.mr, k.nr, 1, k.gemm_tile};
  gemm_driver(M, N, K, alpha, packer<float, bf16>(A, lda, ta, tk.mr), packer<float, bf16>(B, ldb, tb, tk.nr),
              (const float*)nullptr, tk, blocking(tk.mr, tk.nr, sizeof(float), K), beta, C, ldc);
}

void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16* A, int64_t lda, const bf16* B,
               int64_t ldb, float beta, bf16* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  round_into(M, N, beta, C, ldc, true, [&](int64_t m0, int64_t mm, int64_t n0, int64_t nn, float* c, int64_t ldcc) {
    gemm_bf16(ta, tb, mm, nn, K, alpha, rows_of(A, ta, lda, m0), lda, rows_of(B, tb, ldb, n0), ldb, beta, c, ldcc);
  });
}

void gemm_q4_bf16(bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16* A, int64_t lda, const Nf4Weight& W,
                  float beta, bf16* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  // NF4 decodes to fp32 (code times the block's scale, not a bf16 value): fp32 panels, the A rows
  // widened while packing; the decode GEMV with widened x rows.
  // Whole rows only: an Nf4Weight has no view of a column range.
  round_into(M, N, beta, C, ldc, false, [&](int64_t m0, int64_t mm, int64_t, int64_t, float* c, int64_t ldcc) {
    const bf16* a = A + m0 * lda;
    if (mm <= kGemvMaxM && !tb && K > 0) {
      gemm_q4<float>(tb, mm, N, K, alpha, widen_rows(false, mm, K, a, lda), K, W, beta, c, ldcc);
      return;
    }
    const Kernels& k = kernels();
    const Tile<float, float> tk{k.mr, k.nr, 1, k.gemm_tile};
    gemm_driver(mm, N, K, alpha, packer<float, bf16>(a, lda, false, tk.mr),
                [&](float* dst, int64_t n0, int64_t n1, int64_t k0, int64_t kc, int64_t s0, int64_t s1) {
                  pack_nf4<float>(dst, W, tb, tk.nr, n0, n1, k0, kc, s0, s1);
                },
                (const float*)nullptr, tk, blocking(tk.mr, tk.nr, sizeof(float), K), beta, c, ldcc);
  });
}

}  // namespace sft::cpu
