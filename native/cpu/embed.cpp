// Token embedding lookup and its scatter-add backward (the table's gradient in Acc<T>: it is trainable).
#include <cstring>

#include "core/threads.h"
#include "cpu/ops.h"

namespace sft::cpu {

template <typename T>
void embedding_forward(T* out, const int32_t* ids, const T* table, int64_t n, int64_t C) {
  parallel_for(n, 64, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) std::memcpy(out + i * C, table + int64_t(ids[i]) * C, C * sizeof(T));
  });
}

// Serial over tokens: two tokens may share an id, so rows are added in order (deterministic).
template <typename T>
void embedding_backward(Acc<T>* dtable, const T* dout, const int32_t* ids, int64_t n, int64_t C) {
  using A = Acc<T>;
  parallel_for(C, 256, [&](int64_t c0, int64_t c1) {
    for (int64_t i = 0; i < n; i++) {
      A* row = dtable + int64_t(ids[i]) * C;
      for (int64_t c = c0; c < c1; c++) row[c] += A(dout[i * C + c]);
    }
  });
}

#define SFT_INSTANTIATE(T)                                                          \
  template void embedding_forward<T>(T*, const int32_t*, const T*, int64_t, int64_t); \
  template void embedding_backward<T>(Acc<T>*, const T*, const int32_t*, int64_t, int64_t);
SFT_INSTANTIATE(float)
SFT_INSTANTIATE(double)
SFT_INSTANTIATE(bf16)
#undef SFT_INSTANTIATE

}  // namespace sft::cpu
