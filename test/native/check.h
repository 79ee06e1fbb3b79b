// Shared helpers of the native checks: relative errors, finite differences, one line per check.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

using Vec = std::vector<double>;

inline int failures = 0;
inline const double kTol = 1e-6;

inline Vec randn(size_t n, std::mt19937_64& rng, double scale = 1.0) {
  std::normal_distribution<double> d(0.0, scale);
  Vec v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Norm-wise relative error ||a - b|| / max(||a||, ||b||, tiny).
inline double rel_err(const Vec& a, const Vec& b) {
  double num = 0, na = 0, nb = 0;
  for (size_t i = 0; i < a.size(); i++) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return std::sqrt(num) / std::max({std::sqrt(na), std::sqrt(nb), 1e-30});
}

inline void report(const std::string& name, double err, double tol = kTol) {
  const bool ok = std::isfinite(err) && err < tol;
  if (!ok) failures++;
  std::printf("%s %-58s rel_err %.3e\n", ok ? "ok  " : "FAIL", name.c_str(), err);
}

// Central differences of loss() with respect to every element of x.
inline Vec numeric_grad(Vec& x, const std::function<double()>& loss, double h = 1e-6) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); i++) {
    const double keep = x[i];
    x[i] = keep + h;
    const double lp = loss();
    x[i] = keep - h;
    const double lm = loss();
    x[i] = keep;
    g[i] = (lp - lm) / (2 * h);
  }
  return g;
}

