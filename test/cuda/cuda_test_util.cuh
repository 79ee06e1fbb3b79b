// Helpers shared by the CUDA checks and benchmarks: device buffers filled from host vectors, bf16
// rounding of test data, random inputs, norm-wise relative errors (check.h).
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "../native/check.h"
#include "cuda/types.h"

// A device array of n T's; from a host vector of T, or of floats rounded to bf16 when T is bf16.
template <typename T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t count) : n(count) {
    SFT_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p), (n ? n : 1) * sizeof(T)));
  }
  explicit Dev(const std::vector<T>& h) : Dev(h.size()) { upload(h); }
  template <typename U = T, typename = std::enable_if_t<std::is_same<U, sft::cuda::bf16>::value>>
  explicit Dev(const std::vector<float>& h) : Dev(h.size()) {
    std::vector<T> b(n);
    for (size_t i = 0; i < n; i++) b[i] = __float2bfloat16_rn(h[i]);
    upload(b);
  }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  Dev(Dev&& o) noexcept : p(o.p), n(o.n) { o.p = nullptr; }
  ~Dev() {
    if (p) cudaFree(p);
  }
  void upload(const std::vector<T>& h) {
    SFT_CUDA_CHECK(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  void zero() { SFT_CUDA_CHECK(cudaMemset(p, 0, n * sizeof(T))); }
  std::vector<T> get() const {
    std::vector<T> h(n);
    SFT_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  std::vector<uint8_t> bytes() const {
    std::vector<uint8_t> h(n * sizeof(T));
    SFT_CUDA_CHECK(cudaMemcpy(h.data(), p, h.size(), cudaMemcpyDeviceToHost));
    return h;
  }
  std::vector<float> floats() const {
    const std::vector<T> h = get();
    std::vector<float> f(n);
    for (size_t i = 0; i < n; i++) {
      if constexpr (std::is_same<T, sft::cuda::bf16>::value)
        f[i] = __bfloat162float(h[i]);
      else
        f[i] = float(h[i]);
    }
    return f;
  }
};

inline std::vector<float> randf(int64_t n, std::mt19937_64& rng, double scale = 1.0, double mean = 0.0) {
  std::normal_distribution<float> d{float(mean), float(scale)};
  std::vector<float> v(size_t(n > 0 ? n : 0));
  for (auto& x : v) x = d(rng);
  return v;
}

// The values as T stores them (bf16: rounded to nearest even), back in floats: what both the CPU
// oracle and the device see.
template <typename T>
std::vector<float> as(std::vector<float> v) {
  if constexpr (std::is_same<T, sft::cuda::bf16>::value)
    for (auto& x : v) x = __bfloat162float(__float2bfloat16_rn(x));
  return v;
}

inline double rel(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  return rel_err(Vec(a.begin(), a.end()), Vec(b.begin(), b.end()));
}

// report() of the relative error; on failure also the worst element (index, values), which for a
// [rows, cols] result usually tells a masking or tiling bug from a numerical one.
inline void expect(const std::string& name, const std::vector<float>& got, const std::vector<float>& want, double tol) {
  const int before = failures;
  report(name, rel(got, want), tol);
  if (failures == before || got.size() != want.size()) return;
  size_t worst = 0;
  double d = -1;
  for (size_t i = 0; i < got.size(); i++) {
    const double e = std::fabs(double(got[i]) - double(want[i]));
    if (!(e <= d)) d = e, worst = i;  // NaN counts as worst
  }
  std::printf("       worst at index %zu of %zu: got %.6g, want %.6g\n", worst, got.size(), double(got[worst]),
              double(want[worst]));
}
