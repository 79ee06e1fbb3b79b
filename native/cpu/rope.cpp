// Rotary position embeddings, HF's rotate_half convention: for i < hd/2 the pair
// (x_i, x_{i+hd/2}) is rotated by angle pos * inv_freq_i. The tables come from the model, in
// Acc<T> (fp32 for bf16 storage: each rotated value is rounded once).
#include "core/threads.h"
#include "cpu/ops.h"

namespace sft::cpu {

template <typename T>
static void rotate(T* x, int64_t ld, int64_t rows, int64_t T_, int64_t p0, int heads, int hd,
                   const Acc<T>* cos, const Acc<T>* sin, Acc<T> sign) {
  using A = Acc<T>;
  const int half = hd / 2;
  parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const int64_t pos = p0 + r % T_;
      const A* c = cos + pos * half;
      const A* s = sin + pos * half;
      for (int h = 0; h < heads; h++) {
        T* v = x + r * ld + int64_t(h) * hd;
        for (int i = 0; i < half; i++) {
          const A a = A(v[i]), b = A(v[i + half]);
          v[i] = T(a * c[i] - sign * b * s[i]);
          v[i + half] = T(b * c[i] + sign * a * s[i]);
        }
      }
    }
  });
}

template <typename T>
void rope_forward(T* x, int64_t ld, int64_t rows, int64_t T_, int64_t p0, int heads, int hd, const Acc<T>* cos,
                  const Acc<T>* sin) {
  rotate<T>(x, ld, rows, T_, p0, heads, hd, cos, sin, Acc<T>(1));
}

// The rotation is orthogonal, so its backward is the rotation by the negative angle.
template <typename T>
void rope_backward(T* dx, int64_t ld, int64_t rows, int64_t T_, int64_t p0, int heads, int hd, const Acc<T>* cos,
                   const Acc<T>* sin) {
  rotate<T>(dx, ld, rows, T_, p0, heads, hd, cos, sin, Acc<T>(-1));
}

#define SFT_INSTANTIATE(T)                                                                                    \
  template void rope_forward<T>(T*, int64_t, int64_t, int64_t, int64_t, int, int, const Acc<T>*, const Acc<T>*); \
  template void rope_backward<T>(T*, int64_t, int64_t, int64_t, int64_t, int, int, const Acc<T>*, const Acc<T>*);
SFT_INSTANTIATE(float)
SFT_INSTANTIATE(double)
SFT_INSTANTIATE(bf16)
#undef SFT_INSTANTIATE

}  // namespace sft::cpu
