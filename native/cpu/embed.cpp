// Token embedding lookup and its scatter-add backward.
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
void embedding_backward(T* dtable, const T* dout, const int32_t* ids, int64_t n, int64_t C) {
  parallel_for(C, 256, [&](int64_t c0, int64_t c1) {
    for (int64_t i = 0; i < n; i++) {
      T* row = dtable + int64_t(ids[i]) * C;
      for (int64_t c = c0; c < c1; c++) row[c] += dout[i * C + c];
    }
  });
}

template void embedding_forward<float>(float*, const int32_t*, const float*, int64_t, int64_t);
template void embedding_forward<double>(double*, const int32_t*, const double*, int64_t, int64_t);
template void embedding_backward<float>(float*, const float*, const int32_t*, int64_t, int64_t);
template void embedding_backward<double>(double*, const double*, const int32_t*, int64_t, int64_t);

}  // namespace sft::cpu
