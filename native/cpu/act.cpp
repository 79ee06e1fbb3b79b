// SwiGLU, the Llama MLP's gate: out = silu(gate) * up, silu(g) = g * sigmoid(g).
#include <cmath>

#include "core/threads.h"
#include "cpu/ops.h"

namespace sft::cpu {

template <typename T>
void swiglu_forward(T* out, const T* gate, const T* up, int64_t n) {
  parallel_for(n, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const T g = gate[i];
      out[i] = g / (T(1) + std::exp(-g)) * up[i];
    }
  });
}

// d silu(g)/dg = s (1 + g (1 - s)),  s = sigmoid(g)
template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t n) {
  parallel_for(n, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const T g = gate[i];
      const T s = T(1) / (T(1) + std::exp(-g));
      dgate[i] += dout[i] * up[i] * s * (T(1) + g * (T(1) - s));
      dup[i] += dout[i] * g * s;
    }
  });
}

template void swiglu_forward<float>(float*, const float*, const float*, int64_t);
template void swiglu_forward<double>(double*, const double*, const double*, int64_t);
template void swiglu_backward<float>(float*, float*, const float*, const float*, const float*, int64_t);
template void swiglu_backward<double>(double*, double*, const double*, const double*, const double*, int64_t);

}  // namespace sft::cpu
