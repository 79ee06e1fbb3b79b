// Portable SIMD through GCC/Clang vector extensions: one source for AVX-512, AVX2 and SSE.
// Reductions are written with explicit vector accumulators because the compiler may not
// reorder a scalar float sum by itself (we do not build with -ffast-math: NaN checks must work).
#pragma once
#include <cstdint>
#include <cstring>

namespace sft::cpu {

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
inline typename Vec<T>::type vload(const T* p) {
  typename Vec<T>::type v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
inline void vstore(T* p, typename Vec<T>::type v) {
  std::memcpy(p, &v, sizeof v);
}

template <typename T>
inline T hsum(typename Vec<T>::type v) {
  constexpr int W = kVecBytes / sizeof(T);
  T s = 0;
  for (int i = 0; i < W; i++) s += v[i];
  return s;
}

// sum_i a[i] * b[i]
template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  using V = typename Vec<T>::type;
  constexpr int W = kVecBytes / sizeof(T);
  V acc = V{};
  int64_t i = 0;
  for (; i + W <= n; i += W) acc += vload(a + i) * vload(b + i);
  T s = hsum<T>(acc);
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

// y[i] += alpha * x[i]
template <typename T>
inline void axpy(T* y, T alpha, const T* x, int64_t n) {
  constexpr int W = kVecBytes / sizeof(T);
  int64_t i = 0;
  for (; i + W <= n; i += W) vstore(y + i, vload(y + i) + alpha * vload(x + i));
  for (; i < n; i++) y[i] += alpha * x[i];
}

// e^x in each fp32 lane. x = n ln2 + r with |r| <= ln2/2 (ln2 in two parts, Cody-Waite), e^r by a
// degree-5 polynomial (Cephes' expf coefficients: within a few ulp of std::exp), 2^n put into the
// exponent bits. Below -87.34 it gives 0 (no subnormals), above 88.37 +inf (a little before fp32's
// own overflow at 88.72); NaN stays NaN. For softmax-like uses, where arguments are <= 0.
inline Vec<float>::type vexp(Vec<float>::type x) {
  using V = Vec<float>::type;
  typedef int32_t VI __attribute__((vector_size(kVecBytes)));
  const V lo = V{} - 87.33654f, hi = V{} + 88.37626f;
  V xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  const V magic = V{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const V n = (xc * 1.44269504088896341f + magic) - magic;
  V r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V p = V{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  V y = p * (r * r) + r + 1.0f;
  const VI bits = (__builtin_convertvector(n, VI) + 127) << 23;
  V scale;
  std::memcpy(&scale, &bits, sizeof scale);
  y = y * scale;
  y = x < lo ? V{} : y;
  return x > hi ? V{} + __builtin_inff() : y;
}

}  // namespace sft::cpu
