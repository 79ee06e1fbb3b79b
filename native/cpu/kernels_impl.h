// The body of every kernels_<isa>.cpp: one source, compiled once per instruction set with that
// file's target flags and vector width (SFT_VEC_BYTES) and GEMM tile (SFT_MR rows x 2 vectors).
// Everything here has internal linkage (anonymous namespace) and calls nothing inline from other
// headers, so no function compiled for one instruction set can be picked by the linker for another.
#include <cstdint>
#include <cstring>
#include <type_traits>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "cpu/kernels.h"

namespace sft::cpu {
namespace {

constexpr int VB = SFT_VEC_BYTES;
constexpr int W = VB / 4;  // floats per vector
constexpr int MR = SFT_MR;
constexpr int NR = 2 * W;
typedef float V __attribute__((vector_size(VB)));
typedef uint16_t V16 __attribute__((vector_size(VB / 2)));
typedef uint32_t V32 __attribute__((vector_size(VB)));

inline V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, V v) { std::memcpy(p, &v, sizeof v); }
inline V splat(float a) {  // (V{} + a would keep the add: 0 + a is not a when a = -0)
  V v;
  for (int i = 0; i < W; i++) v[i] = a;
  return v;
}
inline float hsum(V v) {
  float s = 0;
  for (int i = 0; i < W; i++) s += v[i];
  return s;
}

// IEEE half bits to float (subnormals, infinities and NaN included).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal: man * 2^-24, exact in float
    float f = float(man) * 5.9604644775390625e-8f;
    std::memcpy(&bits, &f, 4);
    bits |= sign;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline float bf16_to_float(uint16_t b) {
  const uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// W lanes of a weight row as floats.
struct F32 {
  typedef float E;
  static V vec(const float* p) { return load(p); }
  static float one(float v) { return v; }
};
struct BF16 {
  typedef uint16_t E;
  static V vec(const uint16_t* p) {
    // Zero-extend to 32 bits, shift into the high half. The intrinsics give one vpmovzxwd of the
    // whole vector; __builtin_convertvector split it in 256-bit halves (-march=skylake-avx512 tunes
    // for 256-bit vectors), which made the bf16 GEMV half as fast as the f16 one.
#if SFT_VEC_BYTES == 64
    const __m512i u = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16);
#elif SFT_VEC_BYTES == 32 && defined(__AVX2__)
    const __m256i u = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16);
#else
    V16 h;
    std::memcpy(&h, p, sizeof h);
    const V32 u = __builtin_convertvector(h, V32) << 16;
#endif
    V v;
    std::memcpy(&v, &u, sizeof v);
    return v;
  }
  static float one(uint16_t v) { return bf16_to_float(v); }
};
struct F16 {
  typedef uint16_t E;
  static V vec(const uint16_t* p) {
#if SFT_VEC_BYTES == 64
    const __m512 r = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#elif SFT_VEC_BYTES == 32 && defined(__F16C__)
    const __m256 r = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#else
    V r;
    for (int i = 0; i < W; i++) r[i] = half_to_float(p[i]);
#endif
    V v;
    std::memcpy(&v, &r, sizeof v);
    return v;
  }
  static float one(uint16_t v) { return half_to_float(v); }
};

#if SFT_VEC_BYTES == 64 && SFT_MR == 12
// AVX-512's 12 x 32 tile with its 24 accumulators as named registers. The generic loop below kept
// them in arrays that GCC 12 zeroes through the stack (a 1.5 KiB rep stos per tile, ~2-3 % of a
// 512-deep tile) and whose every rewrite (unrolled init or epilogue, a second C prefetch) tipped
// its allocator into spilling a B vector inside the k loop (-30 %).
void gemm_tile(int64_t kc, const float* __restrict Ap, const float* __restrict Bp, float* __restrict C, int64_t ldc,
               float alpha, float beta) {
#define SFT_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define SFT_ZERO(i) __m512 c##i##a = _mm512_setzero_ps(), c##i##b = _mm512_setzero_ps();
#define SFT_FMA(i)                                  \
  {                                                 \
    const __m512 a = _mm512_set1_ps(Ap[i]);         \
    c##i##a = _mm512_fmadd_ps(a, b0, c##i##a);      \
    c##i##b = _mm512_fmadd_ps(a, b1, c##i##b);      \
  }
#define SFT_PREFETCH(i) __builtin_prefetch(C + i * ldc, 1);
#define SFT_STORE0(i)                                                  \
  _mm512_storeu_ps(C + i * ldc, _mm512_mul_ps(va, c##i##a));            \
  _mm512_storeu_ps(C + i * ldc + 16, _mm512_mul_ps(va, c##i##b));
// alpha c + beta C as one rounding of alpha c onto the rounded beta C (the generic loop's contraction)
#define SFT_STORE(i)                                                                                         \
  _mm512_storeu_ps(C + i * ldc, _mm512_fmadd_ps(va, c##i##a, _mm512_mul_ps(vb, _mm512_loadu_ps(C + i * ldc)))); \
  _mm512_storeu_ps(C + i * ldc + 16, _mm512_fmadd_ps(va, c##i##b, _mm512_mul_ps(vb, _mm512_loadu_ps(C + i * ldc + 16))));
  SFT_ROWS(SFT_ZERO)
  SFT_ROWS(SFT_PREFETCH)
  for (int64_t k = 0; k < kc; k++) {
    __builtin_prefetch(Bp + 8 * NR);
    const __m512 b0 = _mm512_loadu_ps(Bp), b1 = _mm512_loadu_ps(Bp + 16);
    SFT_ROWS(SFT_FMA)
    Ap += MR;
    Bp += NR;
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  if (beta == 0.f) {
    SFT_ROWS(SFT_STORE0)
  } else {
    SFT_ROWS(SFT_STORE)
  }
#undef SFT_ROWS
#undef SFT_ZERO
#undef SFT_FMA
#undef SFT_PREFETCH
#undef SFT_STORE0
#undef SFT_STORE
}
#else
void gemm_tile(int64_t kc, const float* __restrict Ap, const float* __restrict Bp, float* __restrict C, int64_t ldc,
               float alpha, float beta) {
  V c0[MR], c1[MR];
  for (int i = 0; i < MR; i++) c0[i] = V{}, c1[i] = V{};
  for (int i = 0; i < MR; i++) __builtin_prefetch(C + i * ldc, 1);
  for (int64_t k = 0; k < kc; k++) {
    __builtin_prefetch(Bp + 8 * NR);
    const V b0 = load(Bp), b1 = load(Bp + W);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
      const float a = Ap[i];
      c0[i] += a * b0;
      c1[i] += a * b1;
    }
    Ap += MR;
    Bp += NR;
  }
  const V va = splat(alpha), vb = splat(beta);
  if (beta == 0.f) {
    for (int i = 0; i < MR; i++) store(C + i * ldc, va * c0[i]), store(C + i * ldc + W, va * c1[i]);
  } else {
    for (int i = 0; i < MR; i++) {
      store(C + i * ldc, va * c0[i] + vb * load(C + i * ldc));
      store(C + i * ldc + W, va * c1[i] + vb * load(C + i * ldc + W));
    }
  }
}
#endif

// R rows (R = MR, or 1 for the last few) x NV vectors of columns of the skinny product.
template <int R, int NV, class L>
void skinny_rows(int n, int64_t K, const typename L::E* __restrict A, int64_t sm, int64_t sk, const float* __restrict Bp,
                 float* __restrict C, int64_t rs, int64_t cs, float alpha, float beta) {
  V acc[R][NV];
  for (int i = 0; i < R; i++)
    for (int v = 0; v < NV; v++) acc[i][v] = V{};
  for (int64_t k = 0; k < K; k++) {
    V b[NV];
    for (int v = 0; v < NV; v++) b[v] = load(Bp + k * NR + v * W);
    const typename L::E* a = A + k * sk;
#pragma GCC unroll 16
    for (int i = 0; i < R; i++) {
      const float ai = L::one(a[i * sm]);
      for (int v = 0; v < NV; v++) acc[i][v] += ai * b[v];
    }
  }
  if (cs == 1 && n == NV * W) {
    const V va = splat(alpha), vb = splat(beta);
    for (int i = 0; i < R; i++)
      for (int v = 0; v < NV; v++) {
        float* c = C + i * rs + v * W;
        store(c, beta == 0.f ? va * acc[i][v] : va * acc[i][v] + vb * load(c));
      }
    return;
  }
  for (int i = 0; i < R; i++)
    for (int j = 0; j < n; j++) {
      float* c = C + i * rs + j * cs;
      const float t = acc[i][j / W][j % W];
      *c = beta == 0.f ? alpha * t : alpha * t + beta * *c;
    }
}

template <int NV, class L>
void skinny(int64_t rows, int n, int64_t K, const typename L::E* A, int64_t sm, int64_t sk, const float* Bp, float* C,
            int64_t rs, int64_t cs, float alpha, float beta) {
  int64_t m = 0;
  for (; m + MR <= rows; m += MR) skinny_rows<MR, NV, L>(n, K, A + m * sm, sm, sk, Bp, C + m * rs, rs, cs, alpha, beta);
  for (; m < rows; m++) skinny_rows<1, NV, L>(n, K, A + m * sm, sm, sk, Bp, C + m * rs, rs, cs, alpha, beta);
}

void gemm_skinny(int64_t rows, int n, int64_t K, const float* A, int64_t sm, int64_t sk, const float* Bp, float* C,
                 int64_t rs, int64_t cs, float alpha, float beta) {
  if (n <= W)
    skinny<1, F32>(rows, n, K, A, sm, sk, Bp, C, rs, cs, alpha, beta);
  else
    skinny<2, F32>(rows, n, K, A, sm, sk, Bp, C, rs, cs, alpha, beta);
}
void gemm_skinny_bf16(int64_t rows, int n, int64_t K, const uint16_t* A, int64_t sm, int64_t sk, const float* Bp, float* C,
                      int64_t rs, int64_t cs, float alpha, float beta) {
  if (n <= W)
    skinny<1, BF16>(rows, n, K, A, sm, sk, Bp, C, rs, cs, alpha, beta);
  else
    skinny<2, BF16>(rows, n, K, A, sm, sk, Bp, C, rs, cs, alpha, beta);
}

// y = alpha s (+ beta y): a GEMV output element.
inline void put(float* y, float alpha, float beta, float s) { *y = beta == 0.f ? alpha * s : alpha * s + beta * *y; }

#if defined(SFT_BF16_DP)
// vdpbf16ps: each fp32 lane adds the products of one k-pair of bf16 values (exact in fp32), so a
// tile is the fp32 kernel's with half the k steps and twice the multiply-adds per instruction. The
// instruction treats bf16 subnormals as zero and flushes fp32 subnormal results (DAZ / FTZ).
#if !defined(SFT_AMX)  // the amx table's tile is gemm_tile_amx below
constexpr int MR16 = MR, NR16 = NR;
void gemm_tile_bf16(int64_t kc, const uint16_t* __restrict Ap, const uint16_t* __restrict Bp, float* __restrict C,
                    int64_t ldc, float alpha, float beta) {
  __m512 c0[MR16], c1[MR16];
  for (int i = 0; i < MR16; i++) c0[i] = _mm512_setzero_ps(), c1[i] = _mm512_setzero_ps();
  for (int i = 0; i < MR16; i++) __builtin_prefetch(C + i * ldc, 1);
  const int64_t pairs = (kc + 1) / 2;
  for (int64_t p = 0; p < pairs; p++) {
    __builtin_prefetch(Bp + 8 * 2 * NR16);
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(Bp), b1 = (__m512bh)_mm512_loadu_si512(Bp + 32);
#pragma GCC unroll 16
    for (int i = 0; i < MR16; i++) {
      int32_t pair;
      std::memcpy(&pair, Ap + 2 * i, 4);
      const __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
      c0[i] = _mm512_dpbf16_ps(c0[i], a, b0);
      c1[i] = _mm512_dpbf16_ps(c1[i], a, b1);
    }
    Ap += 2 * MR16;
    Bp += 2 * NR16;
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  for (int i = 0; i < MR16; i++) {
    float* c = C + i * ldc;
    if (beta == 0.f) {
      _mm512_storeu_ps(c, _mm512_mul_ps(va, c0[i]));
      _mm512_storeu_ps(c + 16, _mm512_mul_ps(va, c1[i]));
    } else {
      _mm512_storeu_ps(c, _mm512_add_ps(_mm512_mul_ps(va, c0[i]), _mm512_mul_ps(vb, _mm512_loadu_ps(c))));
      _mm512_storeu_ps(c + 16, _mm512_add_ps(_mm512_mul_ps(va, c1[i]), _mm512_mul_ps(vb, _mm512_loadu_ps(c + 16))));
    }
  }
}
#endif

// x [M, K] and W rows both bf16: 32 k per vdpbf16ps, the last partial vector by masked (zeroing)
// loads. W is walked row after row (one stream the prefetcher follows); each weight vector is loaded
// once and used by every x row. Every (x row, W row) pair gets the same sums in the same order, four
// accumulators over consecutive vectors, whatever M and [n0, n1) are: a row's result does not depend
// on the rows decoded beside it (continuous batching's greedy outputs equal a request's alone).
template <int M>
void gemv16_m(int64_t n0, int64_t n1, int64_t K, const uint16_t* __restrict x, int64_t ldx, const uint16_t* __restrict Wt,
              int64_t ldw, float* __restrict y, int64_t ldy, float alpha, float beta) {
  const int64_t full = K / 32 * 32;
  const __mmask32 tail = K > full ? __mmask32((1ull << (K - full)) - 1) : 0;
  const auto ld = [](const uint16_t* p) { return (__m512bh)_mm512_loadu_si512(p); };
  const auto ldt = [tail](const uint16_t* p) { return (__m512bh)_mm512_maskz_loadu_epi16(tail, p); };
  for (int64_t n = n0; n < n1; n++) {
    const uint16_t* w = Wt + n * ldw;
    __m512 a[M][4];
    for (int m = 0; m < M; m++)
      for (int u = 0; u < 4; u++) a[m][u] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 128 <= full; k += 128) {
      const __m512bh w0 = ld(w + k), w1 = ld(w + k + 32), w2 = ld(w + k + 64), w3 = ld(w + k + 96);
      for (int m = 0; m < M; m++) {
        const uint16_t* xm = x + m * ldx + k;
        a[m][0] = _mm512_dpbf16_ps(a[m][0], ld(xm), w0);
        a[m][1] = _mm512_dpbf16_ps(a[m][1], ld(xm + 32), w1);
        a[m][2] = _mm512_dpbf16_ps(a[m][2], ld(xm + 64), w2);
        a[m][3] = _mm512_dpbf16_ps(a[m][3], ld(xm + 96), w3);
      }
    }
    for (; k < full; k += 32) {
      const __m512bh w0 = ld(w + k);
      for (int m = 0; m < M; m++) a[m][0] = _mm512_dpbf16_ps(a[m][0], ld(x + m * ldx + k), w0);
    }
    if (tail) {
      const __m512bh w0 = ldt(w + full);
      for (int m = 0; m < M; m++) a[m][1] = _mm512_dpbf16_ps(a[m][1], ldt(x + m * ldx + full), w0);
    }
    for (int m = 0; m < M; m++)
      put(y + m * ldy + n, alpha, beta, _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a[m][0], a[m][1]), _mm512_add_ps(a[m][2], a[m][3]))));
  }
}

void gemv_bf16x(int64_t M, int64_t n0, int64_t n1, int64_t K, const uint16_t* x, int64_t ldx, const uint16_t* Wt, int64_t ldw,
                float* y, int64_t ldy, float alpha, float beta) {
  for (int64_t m = 0; m < M;) {
    const int64_t mm = M - m >= 4 ? 4 : M - m;
    const uint16_t* xm = x + m * ldx;
    float* ym = y + m * ldy;
    switch (mm) {
      case 1: gemv16_m<1>(n0, n1, K, xm, ldx, Wt, ldw, ym, ldy, alpha, beta); break;
      case 2: gemv16_m<2>(n0, n1, K, xm, ldx, Wt, ldw, ym, ldy, alpha, beta); break;
      case 3: gemv16_m<3>(n0, n1, K, xm, ldx, Wt, ldw, ym, ldy, alpha, beta); break;
      default: gemv16_m<4>(n0, n1, K, xm, ldx, Wt, ldw, ym, ldy, alpha, beta); break;
    }
    m += mm;
  }
}
#if defined(SFT_AMX)
// AMX: eight tile registers of 16 rows x 64 bytes. A 32 x 32 block of C lives in tiles 0-3 (2 x 2 of
// 16 x 16 fp32) while k runs in blocks of 32: tiles 4-5 take A's two 16-row halves (16 x 32 bf16),
// tiles 6-7 B's two 16-column halves (16 k-pairs x 16 columns x 2), and four TDPBF16PS (each 16 x 16
// x 32 multiply-adds, products exact in fp32, added pair by pair into the fp32 C) advance the block.
// The panels are packed in exactly those 1 KiB tiles (kernels.h, kstep16 32), so every load is
// contiguous at a 64-byte stride. Like vdpbf16ps, bf16 subnormals read as zero and fp32 subnormal
// results flush to zero. Each thread loads the tile configuration once (it is kept per thread, saved
// with the thread's state on a context switch); the process asked the OS for the tile state
// (cpu/isa.cpp) before this table was chosen.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
void amx_configure() {
  static thread_local bool done = false;
  if (done) return;
  TileConfig cfg;
  for (int t = 0; t < 8; t++) cfg.colsb[t] = 64, cfg.rows[t] = 16;
  _tile_loadconfig(&cfg);
  done = true;
}

constexpr int kAmxM = 32, kAmxN = 32, kAmxK = 32;  // the tile: 2 x 2 C tiles, k in blocks of 32
void gemm_tile_amx(int64_t kc, const uint16_t* __restrict Ap, const uint16_t* __restrict Bp, float* __restrict C,
                   int64_t ldc, float alpha, float beta) {
  amx_configure();
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  const int64_t blocks = (kc + 31) / 32;
  for (int64_t b = 0; b < blocks; b++) {
    const uint16_t* a = Ap + b * 1024;
    const uint16_t* w = Bp + b * 1024;
    _tile_loadd(4, a, 64);
    _tile_loadd(6, w, 64);
    _tile_loadd(5, a + 512, 64);
    _tile_loadd(7, w + 512, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  alignas(64) float t[32 * 32];
  _tile_stored(0, t, 128);
  _tile_stored(1, t + 16, 128);
  _tile_stored(2, t + 16 * 32, 128);
  _tile_stored(3, t + 16 * 32 + 16, 128);
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  for (int i = 0; i < 32; i++) {
    float* c = C + i * ldc;
    for (int h = 0; h < 32; h += 16) {
      const __m512 v = _mm512_mul_ps(va, _mm512_load_ps(t + i * 32 + h));
      _mm512_storeu_ps(c + h, beta == 0.f ? v : _mm512_add_ps(v, _mm512_mul_ps(vb, _mm512_loadu_ps(c + h))));
    }
  }
}
#define SFT_TILE_BF16 kAmxM, kAmxN, kAmxK, gemm_tile_amx, gemv_bf16x
#else
#define SFT_TILE_BF16 MR16, NR16, 2, gemm_tile_bf16, gemv_bf16x
#endif
#else
#define SFT_TILE_BF16 0, 0, 0, nullptr, nullptr
#endif


// M rows of x against rows [n0, n1) of W. Every (x row, W row) pair gets the same sums in the same
// order whatever M, [n0, n1) and the thread split are — two accumulators over alternate vectors, their
// sum's horizontal sum, then the scalar tail — so a row's result does not depend on the rows decoded
// beside it (continuous batching's greedy outputs equal a request's alone).
//   M = 1 walks W row after row: one stream the prefetcher follows (about twice the bandwidth of four
//   interleaved row streams), two FMA chains per row.
//   M > 1 takes R W rows at a time: each weight vector is loaded once for the M x rows and each x
//   vector once for the R W rows (2*M*R accumulators: R as many as the registers hold).
template <int M, int RR, class L>
inline void gemv_rows(int64_t n, int64_t K, const float* __restrict x, int64_t ldx, const typename L::E* __restrict Wt, int64_t ldw,
                      float* __restrict y, int64_t ldy, float alpha, float beta) {
  V a0[M][RR], a1[M][RR];
  for (int m = 0; m < M; m++)
    for (int r = 0; r < RR; r++) a0[m][r] = V{}, a1[m][r] = V{};
  const typename L::E* w = Wt + n * ldw;
  int64_t k = 0;
  for (; k + 2 * W <= K; k += 2 * W) {
    V w0[RR], w1[RR];
    for (int r = 0; r < RR; r++) w0[r] = L::vec(w + r * ldw + k), w1[r] = L::vec(w + r * ldw + k + W);
    for (int m = 0; m < M; m++) {
      const V x0 = load(x + m * ldx + k), x1 = load(x + m * ldx + k + W);
      for (int r = 0; r < RR; r++) a0[m][r] += x0 * w0[r], a1[m][r] += x1 * w1[r];
    }
  }
  if (k + W <= K) {
    for (int r = 0; r < RR; r++) {
      const V w0 = L::vec(w + r * ldw + k);
      for (int m = 0; m < M; m++) a0[m][r] += load(x + m * ldx + k) * w0;
    }
    k += W;
  }
  for (int m = 0; m < M; m++)
    for (int r = 0; r < RR; r++) {
      float s = hsum(a0[m][r] + a1[m][r]);
      for (int64_t kk = k; kk < K; kk++) s += x[m * ldx + kk] * L::one(w[r * ldw + kk]);
      put(y + m * ldy + n + r, alpha, beta, s);
    }
}

template <int M, class L>
void gemv_m(int64_t n0, int64_t n1, int64_t K, const float* x, int64_t ldx, const typename L::E* Wt, int64_t ldw, float* y,
            int64_t ldy, float alpha, float beta) {
  constexpr int R = M == 1 ? 1 : VB == 64 ? (M == 2 ? 4 : 2) : (M == 2 ? 2 : 1);
  int64_t n = n0;
  for (; n + R <= n1; n += R) gemv_rows<M, R, L>(n, K, x, ldx, Wt, ldw, y, ldy, alpha, beta);
  for (; n < n1; n++) gemv_rows<M, 1, L>(n, K, x, ldx, Wt, ldw, y, ldy, alpha, beta);  // the range's last rows, the same sums
}

template <class L>
void gemv(int64_t M, int64_t n0, int64_t n1, int64_t K, const float* x, int64_t ldx, const typename L::E* Wt, int64_t ldw,
          float* y, int64_t ldy, float alpha, float beta) {
  for (int64_t m = 0; m < M;) {  // M > 4 (a decode batch) in slices of 4: each slice reads W again
    const int64_t mm = M - m >= 4 ? 4 : M - m;
    const float* xm = x + m * ldx;
    float* ym = y + m * ldy;
    switch (mm) {
      case 1: gemv_m<1, L>(n0, n1, K, xm, ldx, Wt, ldw, ym, ldy, alpha, beta); break;
      case 2: gemv_m<2, L>(n0, n1, K, xm, ldx, Wt, ldw, ym, ldy, alpha, beta); break;
      case 3: gemv_m<3, L>(n0, n1, K, xm, ldx, Wt, ldw, ym, ldy, alpha, beta); break;
      default: gemv_m<4, L>(n0, n1, K, xm, ldx, Wt, ldw, ym, ldy, alpha, beta); break;
    }
    m += mm;
  }
}

void gemv_f32(int64_t M, int64_t n0, int64_t n1, int64_t K, const float* x, int64_t ldx, const float* Wt, int64_t ldw,
              float* y, int64_t ldy, float alpha, float beta) {
  gemv<F32>(M, n0, n1, K, x, ldx, Wt, ldw, y, ldy, alpha, beta);
}
void gemv_bf16(int64_t M, int64_t n0, int64_t n1, int64_t K, const float* x, int64_t ldx, const uint16_t* Wt, int64_t ldw,
               float* y, int64_t ldy, float alpha, float beta) {
  gemv<BF16>(M, n0, n1, K, x, ldx, Wt, ldw, y, ldy, alpha, beta);
}
void gemv_f16(int64_t M, int64_t n0, int64_t n1, int64_t K, const float* x, int64_t ldx, const uint16_t* Wt, int64_t ldw,
              float* y, int64_t ldy, float alpha, float beta) {
  gemv<F16>(M, n0, n1, K, x, ldx, Wt, ldw, y, ldy, alpha, beta);
}

// Decode from gemm_pack_b's panels (kernels.h gemv_panels): frozen weights packed once, read as
// they lie. One kc block of S adjacent strips (ss floats apart) for R rows of x: each element's
// products in k order from zero with one multiply-add each, then y = alpha acc + beta y (beta 0:
// alpha acc) — the tile kernel's sums and epilogue over the same panels, so a decode row has the
// bits the blocked GEMM (prefill) gives that row, whatever M. Several strips at once give M = 1
// (one accumulator pair per element, k in order) independent chains; the last strip may have
// only `valid` columns (N not a multiple of NR).
template <int R, int S>
inline void panel_block(int64_t kc, const float* __restrict x, int64_t ldx, const float* __restrict p, int64_t ss,
                        float* __restrict y, int64_t ldy, int valid, float alpha, float beta) {
  V a0[R][S], a1[R][S];
  for (int r = 0; r < R; r++)
    for (int s = 0; s < S; s++) a0[r][s] = V{}, a1[r][s] = V{};
  for (int64_t k = 0; k < kc; k++) {
#pragma GCC unroll 8
    for (int s = 0; s < S; s++) {
      const float* ps = p + s * ss + k * NR;
      __builtin_prefetch(ps + 8 * NR);
      const V w0 = load(ps), w1 = load(ps + W);
#pragma GCC unroll 8
      for (int r = 0; r < R; r++) {
        const float xr = x[r * ldx + k];
        a0[r][s] += xr * w0;
        a1[r][s] += xr * w1;
      }
    }
  }
  const V va = splat(alpha), vb = splat(beta);
  for (int r = 0; r < R; r++)
    for (int s = 0; s < S; s++) {
      float* c = y + r * ldy + s * NR;
      if (s < S - 1 || valid == NR) {
        if (beta == 0.f) {
          store(c, va * a0[r][s]), store(c + W, va * a1[r][s]);
        } else {
          store(c, va * a0[r][s] + vb * load(c));
          store(c + W, va * a1[r][s] + vb * load(c + W));
        }
        continue;
      }
      float t[NR];  // the blocked driver's partial tile: whole vectors, then the valid columns
      store(t, a0[r][s]), store(t + W, a1[r][s]);
      for (int j = 0; j < valid; j++) c[j] = beta == 0.f ? alpha * t[j] : alpha * t[j] + beta * c[j];
    }
}

// `take` <= S strips of one kc block: S at once, or halves down to single strips (a thread's chunk
// of strips need not start on a group of S).
template <int R, int S>
inline void panel_strips(int64_t take, int64_t kc, const float* x, int64_t ldx, const float* p, int64_t ss, float* y,
                         int64_t ldy, int valid, float alpha, float beta) {
  if constexpr (S > 1) {
    if (take < S) {
      const int64_t h = take < S / 2 ? take : S / 2;
      panel_strips<R, S / 2>(h, kc, x, ldx, p, ss, y, ldy, take == h ? valid : NR, alpha, beta);
      if (take > h) panel_strips<R, S / 2>(take - h, kc, x, ldx, p + h * ss, ss, y + h * NR, ldy, valid, alpha, beta);
      return;
    }
  }
  panel_block<R, S>(kc, x, ldx, p, ss, y, ldy, valid, alpha, beta);
}

// Strips [s0, s1) for the rows of x in slices of Rs rows (one slice where the registers hold M rows;
// AVX2 and SSE take 7 or 8 rows as two slices, the second reading the kc block from L1/L2). Column
// block jc of gemm_pack_b holds its strips' k blocks one after the other: block pc at
// jc K + nstrips nr pc, strip ls of it at ls kc nr.
template <int S, int... Rs>
void panel_rows(int64_t s0, int64_t s1, const float* x, int64_t ldx, const float* P, int64_t N, int64_t K, int64_t KC,
                int64_t NC, float* y, int64_t ldy, float alpha, float beta) {
  for (int64_t s = s0; s < s1;) {
    const int64_t n0 = s * NR, jc = n0 / NC * NC, nstrips = ((NC < N - jc ? NC : N - jc) + NR - 1) / NR, ls = (n0 - jc) / NR;
    int64_t take = s1 - s < nstrips - ls ? s1 - s : nstrips - ls;
    if (take > S) take = S;
    const int64_t last = n0 + (take - 1) * NR;
    const int valid = N - last < NR ? int(N - last) : NR;
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = KC < K - pc ? KC : K - pc;
      const float* p = P + jc * K + nstrips * NR * pc + ls * kc * NR;
      const float b = pc == 0 ? beta : 1.f;
      int64_t m = 0;
      ((panel_strips<Rs, S>(take, kc, x + m * ldx + pc, ldx, p, kc * NR, y + m * ldy + n0, ldy, valid, alpha, b), m += Rs), ...);
    }
    s += take;
  }
}

void gemv_panels(int64_t M, int64_t s0, int64_t s1, const float* x, int64_t ldx, const float* P, int64_t N, int64_t K,
                 int64_t kc, int64_t nc, float* y, int64_t ldy, float alpha, float beta) {
  // Strips per group: about 16 accumulators with AVX-512's 32 registers, 8-12 with 16.
  constexpr bool wide = VB == 64;
  for (int64_t m = 0; m < M; m += 8) {
    const float* xm = x + m * ldx;
    float* ym = y + m * ldy;
    switch (M - m < 8 ? M - m : 8) {
      case 1: panel_rows<wide ? 8 : 4, 1>(s0, s1, xm, ldx, P, N, K, kc, nc, ym, ldy, alpha, beta); break;
      case 2: panel_rows<wide ? 4 : 2, 2>(s0, s1, xm, ldx, P, N, K, kc, nc, ym, ldy, alpha, beta); break;
      case 3: panel_rows<wide ? 2 : 1, 3>(s0, s1, xm, ldx, P, N, K, kc, nc, ym, ldy, alpha, beta); break;
      case 4: panel_rows<wide ? 2 : 1, 4>(s0, s1, xm, ldx, P, N, K, kc, nc, ym, ldy, alpha, beta); break;
      case 5: panel_rows<1, 5>(s0, s1, xm, ldx, P, N, K, kc, nc, ym, ldy, alpha, beta); break;
      case 6: panel_rows<1, 6>(s0, s1, xm, ldx, P, N, K, kc, nc, ym, ldy, alpha, beta); break;
      case 7:
        if constexpr (wide) panel_rows<1, 7>(s0, s1, xm, ldx, P, N, K, kc, nc, ym, ldy, alpha, beta);
        else panel_rows<1, 4, 3>(s0, s1, xm, ldx, P, N, K, kc, nc, ym, ldy, alpha, beta);
        break;
      default:
        if constexpr (wide) panel_rows<1, 8>(s0, s1, xm, ldx, P, N, K, kc, nc, ym, ldy, alpha, beta);
        else panel_rows<1, 4, 4>(s0, s1, xm, ldx, P, N, K, kc, nc, ym, ldy, alpha, beta);
        break;
    }
  }
}

// Attention's block products (kernels.h attn_mm): an R x 2W micro-tile of C in registers, k walked
// in order with one multiply-add per term, so each element's sum is the same on every instruction
// set that has FMA. AR rows: 2 * AR accumulators + 2 vectors of B fit the registers, and AR divides
// the 64-row blocks where the register file allows (8 with AVX-512's 32, 6 with 16).
constexpr int AR = VB == 64 ? 8 : 6;

template <int R, bool TA>
inline void attn_tile(int64_t K, const float* __restrict A, int64_t lda, const float* __restrict B, int64_t ldb,
                      float* __restrict C, int64_t ldc, bool acc) {
  // Every loop over rows unrolled, so that GCC keeps c0 / c1 in registers (rolled, it zeroed them
  // through the stack and stored them back before the epilogue: a fifth of a 64-deep tile).
  V c0[R], c1[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; r++) {
    c0[r] = acc ? load(C + r * ldc) : V{};
    c1[r] = acc ? load(C + r * ldc + W) : V{};
  }
  for (int64_t k = 0; k < K; k++) {
    const V b0 = load(B + k * ldb), b1 = load(B + k * ldb + W);
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) {
      const float a = TA ? A[k * lda + r] : A[r * lda + k];
      c0[r] += a * b0;
      c1[r] += a * b1;
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; r++) {
    store(C + r * ldc, c0[r]);
    store(C + r * ldc + W, c1[r]);
  }
}

// The last rows of a column strip (fewer than AR): a compile-time row count per case.
template <bool TA, int R>
inline void attn_rows(int rows, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                      int64_t ldc, bool acc) {
  if constexpr (R > 0) {
    if (rows == R) return attn_tile<R, TA>(K, A, lda, B, ldb, C, ldc, acc);
    attn_rows<TA, R - 1>(rows, K, A, lda, B, ldb, C, ldc, acc);
  }
}

template <bool TA>
void attn_mm_impl(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                  int64_t ldc, bool acc) {
  for (int64_t n = 0; n < N; n += NR) {
    int64_t m = 0;
    for (; m + AR <= M; m += AR)
      attn_tile<AR, TA>(K, TA ? A + m : A + m * lda, lda, B + n, ldb, C + m * ldc + n, ldc, acc);
    if (m < M) attn_rows<TA, AR - 1>(int(M - m), K, TA ? A + m : A + m * lda, lda, B + n, ldb, C + m * ldc + n, ldc, acc);
  }
}

void attn_mm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, bool ta, const float* B, int64_t ldb,
             float* C, int64_t ldc, bool acc) {
  if (ta) return attn_mm_impl<true>(M, N, K, A, lda, B, ldb, C, ldc, acc);
  attn_mm_impl<false>(M, N, K, A, lda, B, ldb, C, ldc, acc);
}

// core/random.h's mix, repeated here because nothing inline may be shared with other translation
// units (test_gemm checks every instruction set's masks against rng::uniform01_key). Written as
// plain 64-bit lanes so the compiler vectorises it (vpmullq where AVX512DQ exists).
inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

void dropout(float* __restrict out, const float* __restrict x, int64_t n, int64_t i0, uint64_t key, uint64_t threshold,
             float keep) {
  const uint64_t base = key + uint64_t(i0);
#pragma GCC ivdep
  for (int64_t j = 0; j < n; j++) out[j] = (mix64(base + uint64_t(j)) >> 11) < threshold ? 0.f : x[j] * keep;
}

void dropout_add(float* __restrict out, const float* __restrict x, int64_t n, int64_t i0, uint64_t key, uint64_t threshold,
                 float keep) {
  const uint64_t base = key + uint64_t(i0);
#pragma GCC ivdep
  // One rounding (a fused multiply-add) on every instruction set, as the engine's -march baseline
  // compiled the scalar loop this replaces: results do not depend on which kernels run.
  for (int64_t j = 0; j < n; j++)
    out[j] = (mix64(base + uint64_t(j)) >> 11) < threshold ? out[j] : __builtin_fmaf(x[j], keep, out[j]);
}

// Independent multiply-add chains, more than FMA latency x ports on any current core.
double fma_probe(int64_t iters) {
  constexpr int CH = 12;
  V acc[CH];
  for (int i = 0; i < CH; i++) acc[i] = splat(float(i) * 1e-3f);
  const V mul = splat(0.9999999f), add = splat(1e-7f);
  for (int64_t it = 0; it < iters; it++)
    for (int i = 0; i < CH; i++) acc[i] = acc[i] * mul + add;
  V s = V{};
  for (int i = 0; i < CH; i++) s += acc[i];
  volatile float sink = hsum(s);
  (void)sink;
  return double(iters) * CH * W * 2;
}

float stream_sum(const float* x, int64_t n) {
  V a0 = V{}, a1 = V{}, a2 = V{}, a3 = V{};
  int64_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    a0 += load(x + i);
    a1 += load(x + i + W);
    a2 += load(x + i + 2 * W);
    a3 += load(x + i + 3 * W);
  }
  float s = hsum(a0 + a1 + a2 + a3);
  for (; i < n; i++) s += x[i];
  return s;
}

const Kernels kTable = {SFT_KERNELS_NAME, MR,        NR,        gemm_tile,   gemm_skinny, gemm_skinny_bf16,
                        SFT_TILE_BF16,    gemv_f32,  gemv_bf16, gemv_f16,    gemv_panels, dropout,     dropout_add,
                        attn_mm,          fma_probe, stream_sum};

}  // namespace
}  // namespace sft::cpu
