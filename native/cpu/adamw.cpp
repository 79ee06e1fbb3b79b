// AdamW exactly as torch.optim.AdamW computes it (decoupled weight decay, bias corrections
// folded into the step size and the denominator).
#include <cmath>

#include "core/threads.h"
#include "cpu/ops.h"
#include "cpu/quant.h"

#include <algorithm>
#include <vector>

namespace sft::cpu {

template <typename T>
void adamw_update(T* p, const T* g, T* m, T* v, int64_t n, double lr, double b1, double b2, double eps,
                  double weight_decay, int64_t t, double grad_scale) {
  const double bc1 = 1.0 - std::pow(b1, double(t));
  const double bc2 = 1.0 - std::pow(b2, double(t));
  const T step_size = T(lr / bc1);
  const T bc2_sqrt = T(std::sqrt(bc2));
  const T decay = T(1.0 - lr * weight_decay);
  const T tb1 = T(b1), tb2 = T(b2), teps = T(eps), gs = T(grad_scale);
  parallel_for(n, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const T gi = g[i] * gs;
      p[i] *= decay;
      m[i] = tb1 * m[i] + (T(1) - tb1) * gi;
      v[i] = tb2 * v[i] + (T(1) - tb2) * gi * gi;
      const T denom = std::sqrt(v[i]) / bc2_sqrt + teps;
      p[i] -= step_size * m[i] / denom;
    }
  });
}

template <typename T>
void adamw_update_8bit(T* p, const T* g, uint8_t* m8, float* m_absmax, uint8_t* v8, float* v_absmax, int64_t n,
                       double lr, double b1, double b2, double eps, double weight_decay, int64_t t, double grad_scale) {
  const auto& smap = dynamic_map_signed();
  const auto& umap = dynamic_map_unsigned();
  const int64_t blocks = (n + kQ8Block - 1) / kQ8Block;
  parallel_for(blocks, 16, [&](int64_t b0, int64_t b1_) {
    std::vector<T> m(kQ8Block), v(kQ8Block);
    for (int64_t b = b0; b < b1_; b++) {
      const int64_t s = b * kQ8Block, len = std::min(kQ8Block, n - s);
      for (int64_t i = 0; i < len; i++) m[i] = T(smap[m8[s + i]] * m_absmax[b]), v[i] = T(umap[v8[s + i]] * v_absmax[b]);
      adamw_update<T>(p + s, g + s, m.data(), v.data(), len, lr, b1, b2, eps, weight_decay, t, grad_scale);
      float ma = 0, va = 0;
      for (int64_t i = 0; i < len; i++) ma = std::max(ma, float(std::fabs(m[i]))), va = std::max(va, float(v[i]));
      m_absmax[b] = ma, v_absmax[b] = va;
      const float mi = ma > 0 ? 1.0f / ma : 0.0f, vi = va > 0 ? 1.0f / va : 0.0f;
      for (int64_t i = 0; i < len; i++) m8[s + i] = map_index(smap, float(m[i]) * mi), v8[s + i] = map_index(umap, float(v[i]) * vi);
    }
  });
}

template void adamw_update_8bit<float>(float*, const float*, uint8_t*, float*, uint8_t*, float*, int64_t, double, double,
                                       double, double, double, int64_t, double);
template void adamw_update_8bit<double>(double*, const double*, uint8_t*, float*, uint8_t*, float*, int64_t, double,
                                        double, double, double, double, int64_t, double);
template void adamw_update<float>(float*, const float*, float*, float*, int64_t, double, double, double,
                                  double, double, int64_t, double);
template void adamw_update<double>(double*, const double*, double*, double*, int64_t, double, double,
                                   double, double, double, int64_t, double);

}  // namespace sft::cpu
