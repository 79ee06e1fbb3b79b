// Rotary position embeddings, HF's rotate_half convention: for i < hd/2 the pair
// (x_i, x_{i+hd/2}) is rotated by angle pos * inv_freq_i. The tables come from the model.
#include "core/threads.h"
#include "cpu/ops.h"

namespace sft::cpu {

template <typename T>
static void rotate(T* x, int64_t ld, int64_t rows, int64_t T_, int64_t p0, int heads, int hd,
                   const T* cos, const T* sin, T sign) {
  const int half = hd / 2;
  parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const int64_t pos = p0 + r % T_;
      const T* c = cos + pos * half;
      const T* s = sin + pos * half;
      for (int h = 0; h < heads; h++) {
        T* v = x + r * ld + int64_t(h) * hd;
        for (int i = 0; i < half; i++) {
          const T a = v[i], b = v[i + half];
          v[i] = a * c[i] - sign * b * s[i];
          v[i + half] = b * c[i] + sign * a * s[i];
        }
      }
    }
  });
}

template <typename T>
void rope_forward(T* x, int64_t ld, int64_t rows, int64_t T_, int64_t p0, int heads, int hd, const T* cos,
                  const T* sin) {
  rotate<T>(x, ld, rows, T_, p0, heads, hd, cos, sin, T(1));
}

// The rotation is orthogonal, so its backward is the rotation by the negative angle.
template <typename T>
void rope_backward(T* dx, int64_t ld, int64_t rows, int64_t T_, int64_t p0, int heads, int hd, const T* cos,
                   const T* sin) {
  rotate<T>(dx, ld, rows, T_, p0, heads, hd, cos, sin, T(-1));
}

#define SFT_INSTANTIATE(T)                                                                          \
  template void rope_forward<T>(T*, int64_t, int64_t, int64_t, int64_t, int, int, const T*, const T*); \
  template void rope_backward<T>(T*, int64_t, int64_t, int64_t, int64_t, int, int, const T*, const T*);
SFT_INSTANTIATE(float)
SFT_INSTANTIATE(double)
#undef SFT_INSTANTIATE

}  // namespace sft::cpu
