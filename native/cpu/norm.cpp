// RMSNorm (every Llama-family layer), LayerNorm (Bloom) and row L2-normalisation (Baichuan2's NormHead).
// Math in A = Acc<T> (cpu/ops.h): bf16 values are widened where they are read and each output is
// rounded once; the statistics (rstd, mean) and the weight gradients stay in A.
#include <algorithm>
#include <cmath>

#include "core/threads.h"
#include "cpu/ops.h"

namespace sft::cpu {

template <typename T>
void rmsnorm_forward(T* out, Acc<T>* rstd, const T* inp, const T* w, int64_t N, int64_t C, double eps) {
  using A = Acc<T>;
  parallel_for(N, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      const T* x = inp + n * C;
      double ss = 0;  // accumulate in double: the mean of squares is the sensitive part
      for (int64_t c = 0; c < C; c++) ss += double(A(x[c])) * double(A(x[c]));
      A r = A(1.0 / std::sqrt(ss / double(C) + eps));
      rstd[n] = r;
      T* y = out + n * C;
      for (int64_t c = 0; c < C; c++) y[c] = T(A(w[c]) * (A(x[c]) * r));
    }
  });
}

// y_c = w_c x_c r,  r = (mean(x^2) + eps)^(-1/2),  dr/dx_c = -r^3 x_c / C
// dx_c = r w_c dy_c - (r^3 / C) x_c sum_j(w_j dy_j x_j);   dw_c = sum_n dy_c x_c r
template <typename T>
void rmsnorm_backward(T* dinp, Acc<T>* dw, const T* dout, const T* inp, const T* w, const Acc<T>* rstd, int64_t N,
                      int64_t C) {
  using A = Acc<T>;
  parallel_for(N, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      const T* x = inp + n * C;
      const T* dy = dout + n * C;
      const A r = rstd[n];
      A dot = 0;
      for (int64_t c = 0; c < C; c++) dot += A(w[c]) * A(dy[c]) * A(x[c]);
      const A k = r * r * r * dot / A(C);
      T* dx = dinp + n * C;
      for (int64_t c = 0; c < C; c++) dx[c] = T(A(dx[c]) + (r * A(w[c]) * A(dy[c]) - k * A(x[c])));
    }
  });
  if (dw) {
    // Columns are independent: split C across threads so no two threads write one dw entry.
    parallel_for(C, 64, [&](int64_t c0, int64_t c1) {
      for (int64_t n = 0; n < N; n++) {
        const T* x = inp + n * C;
        const T* dy = dout + n * C;
        const A r = rstd[n];
        for (int64_t c = c0; c < c1; c++) dw[c] += A(dy[c]) * A(x[c]) * r;
      }
    });
  }
}

template <typename T>
void layernorm_forward(T* out, Acc<T>* mean, Acc<T>* rstd, const T* inp, const T* w, const T* b, int64_t N, int64_t C,
                       double eps) {
  using A = Acc<T>;
  parallel_for(N, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      const T* x = inp + n * C;
      double s = 0;  // two passes in double: mean first, then the centred variance
      for (int64_t c = 0; c < C; c++) s += double(A(x[c]));
      const double mu = s / double(C);
      double ss = 0;
      for (int64_t c = 0; c < C; c++) ss += (double(A(x[c])) - mu) * (double(A(x[c])) - mu);
      const A m = A(mu), r = A(1.0 / std::sqrt(ss / double(C) + eps));
      mean[n] = m;
      rstd[n] = r;
      T* y = out + n * C;
      for (int64_t c = 0; c < C; c++) y[c] = T((A(x[c]) - m) * r * A(w[c]) + A(b[c]));
    }
  });
}

// xh = (x - mean) r,  y = w xh + b.  With g = w dy:
// dx = r (g - mean(g) - xh mean(g xh));   dw = sum_n dy xh;   db = sum_n dy
template <typename T>
void layernorm_backward(T* dinp, Acc<T>* dw, Acc<T>* db, const T* dout, const T* inp, const T* w, const Acc<T>* mean,
                        const Acc<T>* rstd, int64_t N, int64_t C) {
  using A = Acc<T>;
  parallel_for(N, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      const T* x = inp + n * C;
      const T* dy = dout + n * C;
      const A m = mean[n], r = rstd[n];
      A sg = 0, sgx = 0;
      for (int64_t c = 0; c < C; c++) {
        const A g = A(w[c]) * A(dy[c]);
        sg += g;
        sgx += g * (A(x[c]) - m) * r;
      }
      sg /= A(C);
      sgx /= A(C);
      T* dx = dinp + n * C;
      for (int64_t c = 0; c < C; c++) dx[c] = T(A(dx[c]) + r * (A(w[c]) * A(dy[c]) - sg - (A(x[c]) - m) * r * sgx));
    }
  });
  if (dw || db) {
    // Columns are independent: split C across threads so no two threads write one entry.
    parallel_for(C, 64, [&](int64_t c0, int64_t c1) {
      for (int64_t n = 0; n < N; n++) {
        const T* x = inp + n * C;
        const T* dy = dout + n * C;
        const A m = mean[n], r = rstd[n];
        for (int64_t c = c0; c < c1; c++) {
          if (dw) dw[c] += A(dy[c]) * (A(x[c]) - m) * r;
          if (db) db[c] += A(dy[c]);
        }
      }
    });
  }
}

template <typename T>
void l2norm_rows_forward(T* out, const T* in, int64_t R, int64_t C, double eps) {
  using A = Acc<T>;
  parallel_for(R, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      double ss = 0;
      for (int64_t c = 0; c < C; c++) ss += double(A(in[r * C + c])) * double(A(in[r * C + c]));
      const A inv = A(1.0 / std::max(std::sqrt(ss), eps));
      for (int64_t c = 0; c < C; c++) out[r * C + c] = T(A(in[r * C + c]) * inv);
    }
  });
}

// y = x / |x| (|x| > eps):  dx = (dy - y (y . dy)) / |x|. The gradients are the (trainable) raw
// rows' and the normalised rows', so both are A.
template <typename T>
void l2norm_rows_backward(Acc<T>* din, const Acc<T>* dout, const T* in, int64_t R, int64_t C, double eps) {
  using A = Acc<T>;
  parallel_for(R, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const T* x = in + r * C;
      const A* dy = dout + r * C;
      double ss = 0;
      for (int64_t c = 0; c < C; c++) ss += double(A(x[c])) * double(A(x[c]));
      const double norm = std::sqrt(ss);
      if (norm <= eps) {  // clamped branch: y = x / eps, a plain scaling
        for (int64_t c = 0; c < C; c++) din[r * C + c] += dy[c] / A(eps);
        continue;
      }
      const A inv = A(1.0 / norm);
      A ydy = 0;
      for (int64_t c = 0; c < C; c++) ydy += A(x[c]) * inv * dy[c];
      for (int64_t c = 0; c < C; c++) din[r * C + c] += (dy[c] - A(x[c]) * inv * ydy) * inv;
    }
  });
}

#define SFT_INSTANTIATE(T)                                                                                          \
  template void rmsnorm_forward<T>(T*, Acc<T>*, const T*, const T*, int64_t, int64_t, double);                      \
  template void rmsnorm_backward<T>(T*, Acc<T>*, const T*, const T*, const T*, const Acc<T>*, int64_t, int64_t);    \
  template void layernorm_forward<T>(T*, Acc<T>*, Acc<T>*, const T*, const T*, const T*, int64_t, int64_t, double); \
  template void layernorm_backward<T>(T*, Acc<T>*, Acc<T>*, const T*, const T*, const T*, const Acc<T>*,            \
                                      const Acc<T>*, int64_t, int64_t);                                             \
  template void l2norm_rows_forward<T>(T*, const T*, int64_t, int64_t, double);                                     \
  template void l2norm_rows_backward<T>(Acc<T>*, const Acc<T>*, const T*, int64_t, int64_t, double);
SFT_INSTANTIATE(float)
SFT_INSTANTIATE(double)
SFT_INSTANTIATE(bf16)
#undef SFT_INSTANTIATE

}  // namespace sft::cpu
