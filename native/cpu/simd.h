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

}  // namespace sft::cpu
