// AdamW exactly as torch.optim.AdamW computes it (decoupled weight decay, bias corrections
// folded into the step size and the denominator).
#include <cmath>

#include "core/threads.h"
#include "cpu/ops.h"

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

template void adamw_update<float>(float*, const float*, float*, float*, int64_t, double, double, double,
                                  double, double, int64_t, double);
template void adamw_update<double>(double*, const double*, double*, double*, int64_t, double, double,
                                   double, double, double, int64_t, double);

}  // namespace sft::cpu
