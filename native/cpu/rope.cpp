// Rotary position embeddings, HF's rotate_half convention: for i < hd/2 the pair
// (x_i, x_{i+hd/2}) is rotated by angle pos * inv_freq_i. The tables come from the model, in
// Acc<T> (fp32 for bf16 storage: each rotated value is rounded once).
#include <type_traits>
#include <vector>

#include "core/threads.h"
#include "cpu/mixed.h"
#include "cpu/ops.h"

namespace sft::cpu {

// One row's heads rotated in place (float or double values).
template <typename A>
inline void rotate_row(A* x, int heads, int hd, const A* c, const A* s, A sign) {
  const int half = hd / 2;
  for (int h = 0; h < heads; h++) {
    A* v = x + int64_t(h) * hd;
    for (int i = 0; i < half; i++) {
      const A a = v[i], b = v[i + half];
      v[i] = a * c[i] - sign * b * s[i];
      v[i + half] = b * c[i] + sign * a * s[i];
    }
  }
}

// bf16 rows are widened into a buffer, rotated in fp32 and rounded once (cpu/mixed.h).
template <typename T>
static void rotate(T* x, int64_t ld, int64_t rows, int64_t T_, int64_t p0, int heads, int hd,
                   const Acc<T>* cos, const Acc<T>* sin, Acc<T> sign) {
  const int half = hd / 2;
  const int64_t width = int64_t(heads) * hd;
  parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
    std::vector<float> buf(std::is_same<T, bf16>::value ? size_t(width) : 0);
    for (int64_t r = r0; r < r1; r++) {
      const int64_t pos = p0 + r % T_;
      if constexpr (std::is_same<T, bf16>::value) {
        widen(buf.data(), x + r * ld, width);
        rotate_row<float>(buf.data(), heads, hd, cos + pos * half, sin + pos * half, sign);
        narrow(x + r * ld, buf.data(), width);
      } else {
        rotate_row<T>(x + r * ld, heads, hd, cos + pos * half, sin + pos * half, sign);
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
