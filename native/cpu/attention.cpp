// Causal multi-head attention with grouped-query heads (nkv <= nh; query head h reads kv head
// h / (nh / nkv)), optionally with ALiBi biases (Bloom). Forward saves the softmax probabilities;
// backward is the textbook chain (a constant bias changes nothing in it):
//   dP = dY V^T;  dV += P^T dY;  dS = P * (dP - rowsum(dP * P));  dQ = dS K s;  dK += dS^T Q s
// Both public forms run one implementation that takes each head's column stride (qhs, kvhs).
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "core/threads.h"
#include "cpu/ops.h"
#include "cpu/simd.h"

namespace sft::cpu {


namespace {

template <typename T>
void attention_fwd(T* out, T* att, const T* q, int64_t ldq, int64_t qhs, const T* k, const T* v, int64_t ldkv,
                   int64_t kvhs, const T* slopes, int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh, int nkv,
                   int hd) {
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
      const T* qi = q + (b * Tq + i) * ldq + h * qhs;
      T* p = att ? att + ((b * nh + h) * Tq + i) * Tk : scratch.data();
      T mx = -INFINITY;
      for (int64_t j = 0; j < n_keys; j++) {
        p[j] = dot(qi, k + (b * Tk + j) * ldkv + kvh * kvhs, hd) * scale;
        if (slopes) p[j] += slopes[h] * T(j);
        mx = std::max(mx, p[j]);
      }
      T sum = 0;
      for (int64_t j = 0; j < n_keys; j++) sum += (p[j] = std::exp(p[j] - mx));
      const T inv = T(1) / sum;
      for (int64_t j = 0; j < n_keys; j++) p[j] *= inv;
      for (int64_t j = n_keys; j < Tk; j++) p[j] = 0;
      T* o = out + (b * Tq + i) * ldo + h * hd;
      for (int d = 0; d < hd; d++) o[d] = 0;
      for (int64_t j = 0; j < n_keys; j++) axpy(o, p[j], v + (b * Tk + j) * ldkv + kvh * kvhs, hd);
    }
  });
}

template <typename T>
void attention_bwd(T* dq, T* dk, T* dv, const T* dout, const T* att, const T* q, int64_t ldq, int64_t qhs,
                   const T* k, const T* v, int64_t ldkv, int64_t kvhs, int64_t B, int64_t Tq, int64_t Tk,
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
          const T* qi = q + (b * Tq + i) * ldq + h * qhs;
          T* dqi = dq + (b * Tq + i) * ldq + h * qhs;
          T row = 0;
          for (int64_t j = 0; j < n_keys; j++) {
            const T* vj = v + (b * Tk + j) * ldkv + kvh * kvhs;
            dp[j] = dot(dyi, vj, hd);
            row += dp[j] * p[j];
            axpy(dv + (b * Tk + j) * ldkv + kvh * kvhs, p[j], dyi, hd);
          }
          for (int64_t j = 0; j < n_keys; j++) {
            const T ds = p[j] * (dp[j] - row) * scale;
            axpy(dqi, ds, k + (b * Tk + j) * ldkv + kvh * kvhs, hd);
            axpy(dk + (b * Tk + j) * ldkv + kvh * kvhs, ds, qi, hd);
          }
        }
      }
    }
  });
}

}  // namespace

template <typename T>
void attention_forward(T* out, T* att, const T* q, int64_t ldq, const T* k, const T* v, int64_t ldkv,
                       int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh, int nkv, int hd) {
  attention_fwd<T>(out, att, q, ldq, hd, k, v, ldkv, hd, nullptr, B, Tq, Tk, p0, nh, nkv, hd);
}

template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* att, const T* q, int64_t ldq,
                        const T* k, const T* v, int64_t ldkv, int64_t B, int64_t Tq, int64_t Tk,
                        int64_t p0, int nh, int nkv, int hd) {
  attention_bwd<T>(dq, dk, dv, dout, att, q, ldq, hd, k, v, ldkv, hd, B, Tq, Tk, p0, nh, nkv, hd);
}

template <typename T>
void alibi_slopes(T* out, int n) {
  int p = 1;
  while (2 * p <= n) p *= 2;  // 2^floor(log2 n)
  const T base = T(std::pow(2.0, -8.0 / p)), extra = T(std::pow(2.0, -4.0 / p));
  auto power = [](T x, int e) {  // x^e in T's precision
    return std::is_same<T, float>::value ? T(std::pow(float(x), float(e))) : T(std::pow(double(x), double(e)));
  };
  for (int i = 0; i < p; i++) out[i] = power(base, i + 1);
  for (int i = p; i < n; i++) out[i] = power(extra, 2 * (i - p) + 1);
}

template <typename T>
void alibi_attention_forward(T* out, T* att, const T* q, int64_t ldq, int64_t qhs, const T* k, const T* v,
                             int64_t ldkv, int64_t kvhs, const T* slopes, int64_t B, int64_t Tq, int64_t Tk,
                             int64_t p0, int nh, int hd) {
  attention_fwd<T>(out, att, q, ldq, qhs, k, v, ldkv, kvhs, slopes, B, Tq, Tk, p0, nh, nh, hd);
}

template <typename T>
void alibi_attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* att, const T* q, int64_t ldq,
                              int64_t qhs, const T* k, const T* v, int64_t ldkv, int64_t kvhs, int64_t B,
                              int64_t Tq, int64_t Tk, int64_t p0, int nh, int hd) {
  attention_bwd<T>(dq, dk, dv, dout, att, q, ldq, qhs, k, v, ldkv, kvhs, B, Tq, Tk, p0, nh, nh, hd);
}

#define SFT_INSTANTIATE(T)                                                                           \
  template void attention_forward<T>(T*, T*, const T*, int64_t, const T*, const T*, int64_t, int64_t, \
                                     int64_t, int64_t, int64_t, int, int, int);                     \
  template void attention_backward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, const T*,    \
                                      const T*, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int); \
  template void alibi_slopes<T>(T*, int);                                                            \
  template void alibi_attention_forward<T>(T*, T*, const T*, int64_t, int64_t, const T*, const T*,    \
                                           int64_t, int64_t, const T*, int64_t, int64_t, int64_t,     \
                                           int64_t, int, int);                                       \
  template void alibi_attention_backward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t, \
                                            const T*, const T*, int64_t, int64_t, int64_t, int64_t,   \
                                            int64_t, int64_t, int, int);
SFT_INSTANTIATE(float)
SFT_INSTANTIATE(double)
#undef SFT_INSTANTIATE

}  // namespace sft::cpu
