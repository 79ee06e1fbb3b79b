// Linear layers: y = x W^T + b. All three products run through gemm_nt; the backward
// products transpose one operand first so K is contiguous for both.
#include <vector>

#include "core/threads.h"
#include "cpu/gemm.h"
#include "cpu/ops.h"

namespace sft::cpu {

template <typename T>
void linear_forward(T* out, const T* inp, const T* W, const T* bias, int64_t M, int64_t K, int64_t N,
                    bool accumulate) {
  gemm_nt<T>(M, N, K, T(1), inp, K, W, K, accumulate ? T(1) : T(0), out, N);
  if (bias) {
    parallel_for(M, 64, [&](int64_t m0, int64_t m1) {
      for (int64_t m = m0; m < m1; m++)
        for (int64_t n = 0; n < N; n++) out[m * N + n] += bias[n];
    });
  }
}

template <typename T>
void linear_backward(T* dinp, T* dW, T* dbias, const T* dout, const T* inp, const T* W, int64_t M,
                     int64_t K, int64_t N) {
  if (dinp) {
    // dinp[M,K] += dout[M,N] . W[N,K]  ==  gemm_nt(A = dout, B = W^T [K,N])
    std::vector<T> Wt(static_cast<size_t>(K * N));
    transpose<T>(Wt.data(), W, N, K, K);
    gemm_nt<T>(M, K, N, T(1), dout, N, Wt.data(), N, T(1), dinp, K);
  }
  if (dW) {
    // dW[N,K] += dout^T [N,M] . inp [M,K]  ==  gemm_nt(A = dout^T, B = inp^T [K,M])
    std::vector<T> dout_t(static_cast<size_t>(N * M)), inp_t(static_cast<size_t>(K * M));
    transpose<T>(dout_t.data(), dout, M, N, N);
    transpose<T>(inp_t.data(), inp, M, K, K);
    gemm_nt<T>(N, K, M, T(1), dout_t.data(), M, inp_t.data(), M, T(1), dW, K);
  }
  if (dbias) {
    parallel_for(N, 64, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; n++) {
        T s = 0;
        for (int64_t m = 0; m < M; m++) s += dout[m * N + n];
        dbias[n] += s;
      }
    });
  }
}

template void linear_forward<float>(float*, const float*, const float*, const float*, int64_t, int64_t,
                                    int64_t, bool);
template void linear_forward<double>(double*, const double*, const double*, const double*, int64_t,
                                     int64_t, int64_t, bool);
template void linear_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                     int64_t, int64_t, int64_t);
template void linear_backward<double>(double*, double*, double*, const double*, const double*,
                                      const double*, int64_t, int64_t, int64_t);

}  // namespace sft::cpu
