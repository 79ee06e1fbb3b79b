// Activations: SwiGLU, the Llama MLP's gate (out = silu(gate) * up, silu(g) = g * sigmoid(g)), and
// Bloom's tanh-form GELU. Each is one loop over float or double; bf16 runs the fp32 loop on slices
// widened into stack buffers, its outputs rounded once (cpu/mixed.h).
#include <array>
#include <cmath>
#include <type_traits>

#include "core/threads.h"
#include "cpu/mixed.h"
#include "cpu/ops.h"
#include "cpu/simd.h"

namespace sft::cpu {

namespace {

template <typename A>
void swiglu_fwd(A* out, const A* gate, const A* up, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const A g = gate[i];
    out[i] = g / (A(1) + std::exp(-g)) * up[i];
  }
}

// fp32 through vexp (simd.h), a vector at a time: libm's scalar expf was most of these loops' time.
// Its result differs from std::exp's by float rounding; double (the gradient checks) keeps std::exp.
template <>
void swiglu_fwd<float>(float* out, const float* gate, const float* up, int64_t n) {
  using V = Vec<float>::type;
  constexpr int64_t W = kVecBytes / 4;
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    const V g = vload(gate + i);
    vstore(out + i, g / (1.0f + vexp(-g)) * vload(up + i));
  }
  for (; i < n; i++) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

// d silu(g)/dg = s (1 + g (1 - s)),  s = sigmoid(g)
template <typename A>
void swiglu_bwd(A* dgate, A* dup, const A* dout, const A* gate, const A* up, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const A g = gate[i];
    const A s = A(1) / (A(1) + std::exp(-g));
    dgate[i] += dout[i] * up[i] * s * (A(1) + g * (A(1) - s));
    dup[i] += dout[i] * g * s;
  }
}

template <>
void swiglu_bwd<float>(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t n) {
  using V = Vec<float>::type;
  constexpr int64_t W = kVecBytes / 4;
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    const V g = vload(gate + i), d = vload(dout + i);
    const V s = 1.0f / (1.0f + vexp(-g));
    vstore(dgate + i, vload(dgate + i) + d * vload(up + i) * s * (1.0f + g * (1.0f - s)));
    vstore(dup + i, vload(dup + i) + d * g * s);
  }
  for (; i < n; i++) {
    const float g = gate[i], s = 1.0f / (1.0f + std::exp(-g));
    dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
    dup[i] += dout[i] * g * s;
  }
}

// Bloom's constants: 0.79788456 ~ sqrt(2/pi), 0.044715.
constexpr double kGeluA = 0.79788456, kGeluB = 0.044715;

template <typename A>
void gelu_fwd(A* out, const A* inp, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const A x = inp[i];
    out[i] = x * A(0.5) * (A(1) + std::tanh(A(kGeluA) * x * (A(1) + A(kGeluB) * x * x)));
  }
}

// u = a x (1 + b x^2), t = tanh(u):  d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) a (1 + 3 b x^2)
template <typename A>
void gelu_bwd(A* dinp, const A* dout, const A* inp, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const A x = inp[i];
    const A t = std::tanh(A(kGeluA) * x * (A(1) + A(kGeluB) * x * x));
    const A d = A(0.5) * (A(1) + t) + A(0.5) * x * (A(1) - t * t) * A(kGeluA) * (A(1) + A(3 * kGeluB) * x * x);
    dinp[i] += dout[i] * d;
  }
}

// Elements [0, n) split across threads; each chunk runs body(i0, len). For bf16, body gets fp32
// slices: `in` arrays widened, `inout` arrays widened and narrowed back, `out` arrays narrowed.
template <typename T, size_t NIn, size_t NInout, size_t NOut, typename Body>
void elementwise(int64_t n, const std::array<const T*, NIn>& in, const std::array<T*, NInout>& inout,
                 const std::array<T*, NOut>& out, Body body) {
  parallel_for(n, 1 << 14, [&](int64_t i0, int64_t i1) {
    if constexpr (std::is_same<T, bf16>::value) {
      float bi[NIn + 1][kSlice], bio[NInout + 1][kSlice], bo[NOut + 1][kSlice];
      for (int64_t s = i0; s < i1; s += kSlice) {
        const int64_t m = std::min<int64_t>(kSlice, i1 - s);
        const float* pi[NIn + 1];
        float* pio[NInout + 1];
        float* po[NOut + 1];
        for (size_t k = 0; k < NIn; k++) widen(bi[k], in[k] + s, m), pi[k] = bi[k];
        for (size_t k = 0; k < NInout; k++) widen(bio[k], inout[k] + s, m), pio[k] = bio[k];
        for (size_t k = 0; k < NOut; k++) po[k] = bo[k];
        body(pi, pio, po, m);
        for (size_t k = 0; k < NInout; k++) narrow(inout[k] + s, bio[k], m);
        for (size_t k = 0; k < NOut; k++) narrow(out[k] + s, bo[k], m);
      }
    } else {
      const T* pi[NIn + 1];
      T* pio[NInout + 1];
      T* po[NOut + 1];
      for (size_t k = 0; k < NIn; k++) pi[k] = in[k] + i0;
      for (size_t k = 0; k < NInout; k++) pio[k] = inout[k] + i0;
      for (size_t k = 0; k < NOut; k++) po[k] = out[k] + i0;
      body(pi, pio, po, i1 - i0);
    }
  });
}

}  // namespace

template <typename T>
void swiglu_forward(T* out, const T* gate, const T* up, int64_t n) {
  using A = Acc<T>;
  elementwise<T, 2, 0, 1>(n, {gate, up}, {}, {out},
                          [](const A* const* in, A* const*, A* const* o, int64_t m) { swiglu_fwd<A>(o[0], in[0], in[1], m); });
}

template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t n) {
  using A = Acc<T>;
  elementwise<T, 3, 2, 0>(n, {dout, gate, up}, {dgate, dup}, {},
                          [](const A* const* in, A* const* io, A* const*, int64_t m) { swiglu_bwd<A>(io[0], io[1], in[0], in[1], in[2], m); });
}

template <typename T>
void gelu_tanh_forward(T* out, const T* inp, int64_t n) {
  using A = Acc<T>;
  elementwise<T, 1, 0, 1>(n, {inp}, {}, {out},
                          [](const A* const* in, A* const*, A* const* o, int64_t m) { gelu_fwd<A>(o[0], in[0], m); });
}

template <typename T>
void gelu_tanh_backward(T* dinp, const T* dout, const T* inp, int64_t n) {
  using A = Acc<T>;
  elementwise<T, 2, 1, 0>(n, {dout, inp}, {dinp}, {},
                          [](const A* const* in, A* const* io, A* const*, int64_t m) { gelu_bwd<A>(io[0], in[0], in[1], m); });
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
