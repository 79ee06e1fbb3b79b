// Causal multi-head attention with grouped-query heads (nkv <= nh; query head h reads kv head
// h / (nh / nkv)). Forward saves the softmax probabilities; backward is the textbook chain:
//   dP = dY V^T;  dV += P^T dY;  dS = P * (dP - rowsum(dP * P));  dQ = dS K s;  dK += dS^T Q s
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/threads.h"
#include "cpu/ops.h"
#include "cpu/simd.h"

namespace sft::cpu {


template <typename T>
void attention_forward(T* out, T* att, const T* q, int64_t ldq, const T* k, const T* v, int64_t ldkv,
                       int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh, int nkv, int hd) {
  const T scale = T(1.0 / std::sqrt(double(hd)));
  const int group = nh / nkv;
  const int64_t ldo = int64_t(nh) * hd;
  // One (batch, head, query) row per work item: rows are independent.
  parallel_for(B * nh * Tq, 8, [&](int64_t w0, int64_t w1) {
    std::vector<T> scratch(att ? 0 : Tk);
    for (int64_t w = w0; w < w1; w++) {
      const int64_t b = w / (nh * Tq), h = (w / Tq) % nh, i = w % Tq;
      const int64_t kvh = h / group;
      const int64_t n_keys = p0 + i + 1;
      const T* qi = q + (b * Tq + i) * ldq + h * hd;
      T* p = att ? att + ((b * nh + h) * Tq + i) * Tk : scratch.data();
      T mx = -INFINITY;
      for (int64_t j = 0; j < n_keys; j++) {
        p[j] = dot(qi, k + (b * Tk + j) * ldkv + kvh * hd, hd) * scale;
        mx = std::max(mx, p[j]);
      }
      T sum = 0;
      for (int64_t j = 0; j < n_keys; j++) sum += (p[j] = std::exp(p[j] - mx));
      const T inv = T(1) / sum;
      for (int64_t j = 0; j < n_keys; j++) p[j] *= inv;
      for (int64_t j = n_keys; j < Tk; j++) p[j] = 0;
      T* o = out + (b * Tq + i) * ldo + h * hd;
      for (int d = 0; d < hd; d++) o[d] = 0;
      for (int64_t j = 0; j < n_keys; j++) axpy(o, p[j], v + (b * Tk + j) * ldkv + kvh * hd, hd);
    }
  });
}

template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* att, const T* q, int64_t ldq,
                        const T* k, const T* v, int64_t ldkv, int64_t B, int64_t Tq, int64_t Tk,
                        int64_t p0, int nh, int nkv, int hd) {
  const T scale = T(1.0 / std::sqrt(double(hd)));
  const int group = nh / nkv;
  const int64_t ldo = int64_t(nh) * hd;
  // Work item = (batch, kv head): it owns dk/dv of that kv head, so no two threads write the
  // same gradient row; it loops over the query heads of its group.
  parallel_for(B * nkv, 1, [&](int64_t w0, int64_t w1) {
    std::vector<T> dp(Tk);
    for (int64_t w = w0; w < w1; w++) {
      const int64_t b = w / nkv, kvh = w % nkv;
      for (int64_t h = kvh * group; h < (kvh + 1) * group; h++) {
        for (int64_t i = 0; i < Tq; i++) {
          const int64_t n_keys = p0 + i + 1;
          const T* p = att + ((b * nh + h) * Tq + i) * Tk;
          const T* dyi = dout + (b * Tq + i) * ldo + h * hd;
          const T* qi = q + (b * Tq + i) * ldq + h * hd;
          T* dqi = dq + (b * Tq + i) * ldq + h * hd;
          T row = 0;
          for (int64_t j = 0; j < n_keys; j++) {
            const T* vj = v + (b * Tk + j) * ldkv + kvh * hd;
            dp[j] = dot(dyi, vj, hd);
            row += dp[j] * p[j];
            axpy(dv + (b * Tk + j) * ldkv + kvh * hd, p[j], dyi, hd);
          }
          for (int64_t j = 0; j < n_keys; j++) {
            const T ds = p[j] * (dp[j] - row) * scale;
            axpy(dqi, ds, k + (b * Tk + j) * ldkv + kvh * hd, hd);
            axpy(dk + (b * Tk + j) * ldkv + kvh * hd, ds, qi, hd);
          }
        }
      }
    }
  });
}

#define SFT_INSTANTIATE(T)                                                                           \
  template void attention_forward<T>(T*, T*, const T*, int64_t, const T*, const T*, int64_t, int64_t, \
                                     int64_t, int64_t, int64_t, int, int, int);                     \
  template void attention_backward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, const T*,    \
                                      const T*, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int);
SFT_INSTANTIATE(float)
SFT_INSTANTIATE(double)
#undef SFT_INSTANTIATE

}  // namespace sft::cpu
