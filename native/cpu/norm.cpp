// RMSNorm (every Llama-family layer), LayerNorm (Bloom) and row L2-normalisation (Baichuan2's NormHead).
#include <algorithm>
#include <cmath>

#include "core/threads.h"
#include "cpu/ops.h"

namespace sft::cpu {

template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* inp, const T* w, int64_t N, int64_t C, double eps) {
  parallel_for(N, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      const T* x = inp + n * C;
      double ss = 0;  // accumulate in double: the mean of squares is the sensitive part
      for (int64_t c = 0; c < C; c++) ss += double(x[c]) * double(x[c]);
      T r = T(1.0 / std::sqrt(ss / double(C) + eps));
      rstd[n] = r;
      T* y = out + n * C;
      for (int64_t c = 0; c < C; c++) y[c] = w[c] * (x[c] * r);
    }
  });
}

// y_c = w_c x_c r,  r = (mean(x^2) + eps)^(-1/2),  dr/dx_c = -r^3 x_c / C
// dx_c = r w_c dy_c - (r^3 / C) x_c sum_j(w_j dy_j x_j);   dw_c = sum_n dy_c x_c r
template <typename T>
void rmsnorm_backward(T* dinp, T* dw, const T* dout, const T* inp, const T* w, const T* rstd, int64_t N,
                      int64_t C) {
  parallel_for(N, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      const T* x = inp + n * C;
      const T* dy = dout + n * C;
      const T r = rstd[n];
      T dot = 0;
      for (int64_t c = 0; c < C; c++) dot += w[c] * dy[c] * x[c];
      const T k = r * r * r * dot / T(C);
      T* dx = dinp + n * C;
      for (int64_t c = 0; c < C; c++) dx[c] += r * w[c] * dy[c] - k * x[c];
    }
  });
  if (dw) {
    // Columns are independent: split C across threads so no two threads write one dw entry.
    parallel_for(C, 64, [&](int64_t c0, int64_t c1) {
      for (int64_t n = 0; n < N; n++) {
        const T* x = inp + n * C;
        const T* dy = dout + n * C;
        const T r = rstd[n];
        for (int64_t c = c0; c < c1; c++) dw[c] += dy[c] * x[c] * r;
      }
    });
  }
}

template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* w, const T* b, int64_t N, int64_t C,
                       double eps) {
  parallel_for(N, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      const T* x = inp + n * C;
      double s = 0;  // two passes in double: mean first, then the centred variance
      for (int64_t c = 0; c < C; c++) s += double(x[c]);
      const double mu = s / double(C);
      double ss = 0;
      for (int64_t c = 0; c < C; c++) ss += (double(x[c]) - mu) * (double(x[c]) - mu);
      const T m = T(mu), r = T(1.0 / std::sqrt(ss / double(C) + eps));
      mean[n] = m;
      rstd[n] = r;
      T* y = out + n * C;
      for (int64_t c = 0; c < C; c++) y[c] = (x[c] - m) * r * w[c] + b[c];
    }
  });
}

// xh = (x - mean) r,  y = w xh + b.  With g = w dy:
// dx = r (g - mean(g) - xh mean(g xh));   dw = sum_n dy xh;   db = sum_n dy
template <typename T>
void layernorm_backward(T* dinp, T* dw, T* db, const T* dout, const T* inp, const T* w, const T* mean,
                        const T* rstd, int64_t N, int64_t C) {
  parallel_for(N, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      const T* x = inp + n * C;
      const T* dy = dout + n * C;
      const T m = mean[n], r = rstd[n];
      T sg = 0, sgx = 0;
      for (int64_t c = 0; c < C; c++) {
        const T g = w[c] * dy[c];
        sg += g;
        sgx += g * (x[c] - m) * r;
      }
      sg /= T(C);
      sgx /= T(C);
      T* dx = dinp + n * C;
      for (int64_t c = 0; c < C; c++) dx[c] += r * (w[c] * dy[c] - sg - (x[c] - m) * r * sgx);
    }
  });
  if (dw || db) {
    // Columns are independent: split C across threads so no two threads write one entry.
    parallel_for(C, 64, [&](int64_t c0, int64_t c1) {
      for (int64_t n = 0; n < N; n++) {
        const T* x = inp + n * C;
        const T* dy = dout + n * C;
        const T m = mean[n], r = rstd[n];
        for (int64_t c = c0; c < c1; c++) {
          if (dw) dw[c] += dy[c] * (x[c] - m) * r;
          if (db) db[c] += dy[c];
        }
      }
    });
  }
}

template <typename T>
void l2norm_rows_forward(T* out, const T* in, int64_t R, int64_t C, double eps) {
  parallel_for(R, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      double ss = 0;
      for (int64_t c = 0; c < C; c++) ss += double(in[r * C + c]) * double(in[r * C + c]);
      const T inv = T(1.0 / std::max(std::sqrt(ss), eps));
      for (int64_t c = 0; c < C; c++) out[r * C + c] = in[r * C + c] * inv;
    }
  });
}

// y = x / |x| (|x| > eps):  dx = (dy - y (y . dy)) / |x|
template <typename T>
void l2norm_rows_backward(T* din, const T* dout, const T* in, int64_t R, int64_t C, double eps) {
  parallel_for(R, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const T* x = in + r * C;
      const T* dy = dout + r * C;
      double ss = 0;
      for (int64_t c = 0; c < C; c++) ss += double(x[c]) * double(x[c]);
      const double norm = std::sqrt(ss);
      if (norm <= eps) {  // clamped branch: y = x / eps, a plain scaling
        for (int64_t c = 0; c < C; c++) din[r * C + c] += dy[c] / T(eps);
        continue;
      }
      const T inv = T(1.0 / norm);
      T ydy = 0;
      for (int64_t c = 0; c < C; c++) ydy += x[c] * inv * dy[c];
      for (int64_t c = 0; c < C; c++) din[r * C + c] += (dy[c] - x[c] * inv * ydy) * inv;
    }
  });
}

#define SFT_INSTANTIATE(T)                                                                              \
  template void rmsnorm_forward<T>(T*, T*, const T*, const T*, int64_t, int64_t, double);              \
  template void rmsnorm_backward<T>(T*, T*, const T*, const T*, const T*, const T*, int64_t, int64_t); \
  template void layernorm_forward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t, double); \
  template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*,     \
                                      int64_t, int64_t);                                               \
  template void l2norm_rows_forward<T>(T*, const T*, int64_t, int64_t, double);                        \
  template void l2norm_rows_backward<T>(T*, const T*, const T*, int64_t, int64_t, double);
SFT_INSTANTIATE(float)
SFT_INSTANTIATE(double)
#undef SFT_INSTANTIATE

}  // namespace sft::cpu
