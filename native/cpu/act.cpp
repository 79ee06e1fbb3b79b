// Activations: SwiGLU, the Llama MLP's gate (out = silu(gate) * up, silu(g) = g * sigmoid(g)), and
// Bloom's tanh-form GELU.
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

// Bloom's constants: 0.79788456 ~ sqrt(2/pi), 0.044715.
constexpr double kGeluA = 0.79788456, kGeluB = 0.044715;

template <typename T>
void gelu_tanh_forward(T* out, const T* inp, int64_t n) {
  parallel_for(n, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const T x = inp[i];
      out[i] = x * T(0.5) * (T(1) + std::tanh(T(kGeluA) * x * (T(1) + T(kGeluB) * x * x)));
    }
  });
}

// u = a x (1 + b x^2), t = tanh(u):  d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) a (1 + 3 b x^2)
template <typename T>
void gelu_tanh_backward(T* dinp, const T* dout, const T* inp, int64_t n) {
  parallel_for(n, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const T x = inp[i];
      const T t = std::tanh(T(kGeluA) * x * (T(1) + T(kGeluB) * x * x));
      const T d = T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * T(kGeluA) * (T(1) + T(3 * kGeluB) * x * x);
      dinp[i] += dout[i] * d;
    }
  });
}

template void gelu_tanh_forward<float>(float*, const float*, int64_t);
template void gelu_tanh_forward<double>(double*, const double*, int64_t);
template void gelu_tanh_backward<float>(float*, const float*, const float*, int64_t);
template void gelu_tanh_backward<double>(double*, const double*, const double*, int64_t);
template void swiglu_forward<float>(float*, const float*, const float*, int64_t);
template void swiglu_forward<double>(double*, const double*, const double*, int64_t);
template void swiglu_backward<float>(float*, float*, const float*, const float*, const float*, int64_t);
template void swiglu_backward<double>(double*, double*, const double*, const double*, const double*, int64_t);

}  // namespace sft::cpu
