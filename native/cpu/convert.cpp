// fp32 -> bf16 in bulk (cpu/mixed.h's narrow). On CPUs with AVX512-BF16 (Zen 4, Sapphire Rapids
// and later) vcvtneps2bf16 rounds 16 values in one instruction, which makes bf16 stores cheaper
// than fp32 ones; elsewhere the inline rounding of bf16.h, vectorised by the compiler. The
// instruction treats subnormal inputs as zero: a block holding one goes the portable way, so both
// paths give bf16.h's result bit for bit (round to nearest even, NaN kept quiet).
#include <cstdint>

#include "cpu/mixed.h"

#if defined(__x86_64__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 10))
#include <immintrin.h>
#define SFT_HAVE_AVX512BF16_PATH 1
#endif

namespace sft::cpu {
namespace {

void narrow_portable(bf16* __restrict dst, const float* __restrict src, int64_t n) {
  for (int64_t i = 0; i < n; i++) dst[i] = bf16(src[i]);
}

#ifdef SFT_HAVE_AVX512BF16_PATH
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void narrow_avx512bf16(bf16* __restrict dst,
                                                                                      const float* __restrict src,
                                                                                      int64_t n) {
  const __m512 tiny = _mm512_set1_ps(1.17549435e-38f);  // the smallest normal float
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    const __m512 x = _mm512_maskz_loadu_ps(m, src + i);
    const __m512 a = _mm512_abs_ps(x);
    // subnormal: 0 < |x| < tiny (NaN compares false: the instruction keeps NaN a quiet NaN, as bf16.h)
    if (_mm512_mask_cmp_ps_mask(m, a, tiny, _CMP_LT_OQ) & _mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_GT_OQ)) {
      narrow_portable(dst + i, src + i, n - i >= 16 ? 16 : n - i);
      continue;
    }
    _mm256_mask_storeu_epi16(dst + i, m, (__m256i)_mm512_cvtneps_pbh(x));
  }
}
#endif

using NarrowFn = void (*)(bf16*, const float*, int64_t);

NarrowFn pick() {
#ifdef SFT_HAVE_AVX512BF16_PATH
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bf16"))
    return narrow_avx512bf16;
#endif
  return narrow_portable;
}

}  // namespace

void narrow(bf16* dst, const float* src, int64_t n) {
  static const NarrowFn f = pick();
  f(dst, src, n);
}

}  // namespace sft::cpu
