// Linear layers: y = x W^T + b. All three products run through gemm_nt; the backward
// products transpose one operand first so K is contiguous for both.
#include "core/threads.h"
#include "cpu/gemm.h"
#include "cpu/ops.h"

namespace sft::cpu {

template <typename T>
void add_bias(T* out, const T* bias, int64_t M, int64_t N) {
  parallel_for(M, 64, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; m++)
      for (int64_t n = 0; n < N; n++) out[m * N + n] += bias[n];
  });
}

template <typename T>
void linear_forward(T* out, const T* inp, const T* W, const T* bias, int64_t M, int64_t K, int64_t N,
                    bool accumulate) {
  gemm_nt<T>(M, N, K, T(1), inp, K, W, K, accumulate ? T(1) : T(0), out, N);
  if (bias) add_bias<T>(out, bias, M, N);
}

template <typename T>
void linear_backward(T* dinp, T* dW, T* dbias, const T* dout, const T* inp, const T* W, int64_t M,
                     int64_t K, int64_t N) {
  // dinp[m,k] += sum_n dout[m,n] W[n,k]       (W read as [N rows of k] = transposed B)
  if (dinp) gemm<T>(false, true, M, K, N, T(1), dout, N, W, K, T(1), dinp, K);
  // dW[n,k] += sum_m dout[m,n] inp[m,k]        (both read transposed)
  if (dW) gemm<T>(true, true, N, K, M, T(1), dout, N, inp, K, T(1), dW, K);
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

template void add_bias<float>(float*, const float*, int64_t, int64_t);
template void add_bias<double>(double*, const double*, int64_t, int64_t);
template void linear_forward<float>(float*, const float*, const float*, const float*, int64_t, int64_t,
                                    int64_t, bool);
template void linear_forward<double>(double*, const double*, const double*, const double*, int64_t,
                                     int64_t, int64_t, bool);
template void linear_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                     int64_t, int64_t, int64_t);
template void linear_backward<double>(double*, double*, double*, const double*, const double*,
                                      const double*, int64_t, int64_t, int64_t);

}  // namespace sft::cpu
