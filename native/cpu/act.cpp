// Activations: SwiGLU, the Llama MLP's gate (out = silu(gate) * up, silu(g) = g * sigmoid(g)), and
// Bloom's tanh-form GELU. Math in A = Acc<T> (fp32 for bf16 storage, each output rounded once).
#include <cmath>

#include "core/threads.h"
#include "cpu/ops.h"

namespace sft::cpu {

template <typename T>
void swiglu_forward(T* out, const T* gate, const T* up, int64_t n) {
  using A = Acc<T>;
  parallel_for(n, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const A g = A(gate[i]);
      out[i] = T(g / (A(1) + std::exp(-g)) * A(up[i]));
    }
  });
}

// d silu(g)/dg = s (1 + g (1 - s)),  s = sigmoid(g)
template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t n) {
  using A = Acc<T>;
  parallel_for(n, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const A g = A(gate[i]), dy = A(dout[i]);
      const A s = A(1) / (A(1) + std::exp(-g));
      dgate[i] = T(A(dgate[i]) + dy * A(up[i]) * s * (A(1) + g * (A(1) - s)));
      dup[i] = T(A(dup[i]) + dy * g * s);
    }
  });
}

// Bloom's constants: 0.79788456 ~ sqrt(2/pi), 0.044715.
constexpr double kGeluA = 0.79788456, kGeluB = 0.044715;

template <typename T>
void gelu_tanh_forward(T* out, const T* inp, int64_t n) {
  using A = Acc<T>;
  parallel_for(n, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const A x = A(inp[i]);
      out[i] = T(x * A(0.5) * (A(1) + std::tanh(A(kGeluA) * x * (A(1) + A(kGeluB) * x * x))));
    }
  });
}

// u = a x (1 + b x^2), t = tanh(u):  d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) a (1 + 3 b x^2)
template <typename T>
void gelu_tanh_backward(T* dinp, const T* dout, const T* inp, int64_t n) {
  using A = Acc<T>;
  parallel_for(n, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const A x = A(inp[i]);
      const A t = std::tanh(A(kGeluA) * x * (A(1) + A(kGeluB) * x * x));
      const A d = A(0.5) * (A(1) + t) + A(0.5) * x * (A(1) - t * t) * A(kGeluA) * (A(1) + A(3 * kGeluB) * x * x);
      dinp[i] = T(A(dinp[i]) + A(dout[i]) * d);
    }
  });
}

#define SFT_INSTANTIATE(T)                                                                  \
  template void gelu_tanh_forward<T>(T*, const T*, int64_t);                                \
  template void gelu_tanh_backward<T>(T*, const T*, const T*, int64_t);                     \
  template void swiglu_forward<T>(T*, const T*, const T*, int64_t);                         \
  template void swiglu_backward<T>(T*, T*, const T*, const T*, const T*, int64_t);
SFT_INSTANTIATE(float)
SFT_INSTANTIATE(double)
SFT_INSTANTIATE(bf16)
#undef SFT_INSTANTIATE

}  // namespace sft::cpu
