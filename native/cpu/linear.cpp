// Linear layers: y = x W^T + b. All three products run through one GEMM (cpu/mixed.h: fp32 or
// double kernels, or the bf16 ones with fp32 accumulation); the backward products read one operand
// transposed so K is contiguous for both.
#include <type_traits>
#include <vector>

#include "core/threads.h"
#include "cpu/mixed.h"
#include "cpu/ops.h"

namespace sft::cpu {

// bf16 rows are widened into a buffer, summed in fp32 and rounded once (cpu/mixed.h).
template <typename T>
void add_bias(T* out, const T* bias, int64_t M, int64_t N) {
  parallel_for(M, 64, [&](int64_t m0, int64_t m1) {
    if constexpr (std::is_same<T, bf16>::value) {
      std::vector<float> b(static_cast<size_t>(N)), row(static_cast<size_t>(N));
      widen(b.data(), bias, N);
      for (int64_t m = m0; m < m1; m++) {
        widen(row.data(), out + m * N, N);
        for (int64_t n = 0; n < N; n++) row[size_t(n)] += b[size_t(n)];
        narrow(out + m * N, row.data(), N);
      }
    } else {
      for (int64_t m = m0; m < m1; m++)
        for (int64_t n = 0; n < N; n++) out[m * N + n] += bias[n];
    }
  });
}

template <typename T>
void linear_forward(T* out, const T* inp, const T* W, const T* bias, int64_t M, int64_t K, int64_t N,
                    bool accumulate) {
  gemm_t<T, T>(false, false, M, N, K, 1.0, inp, K, W, K, accumulate ? 1.0 : 0.0, out, N);
  if (bias) add_bias<T>(out, bias, M, N);
}

template <typename T>
void linear_backward(T* dinp, Acc<T>* dW, Acc<T>* dbias, const T* dout, const T* inp, const T* W, int64_t M,
                     int64_t K, int64_t N) {
  using A = Acc<T>;
  // dinp[m,k] += sum_n dout[m,n] W[n,k]       (W read as [N rows of k] = transposed B)
  if (dinp) gemm_t<T, T>(false, true, M, K, N, 1.0, dout, N, W, K, 1.0, dinp, K);
  // dW[n,k] += sum_m dout[m,n] inp[m,k]        (both read transposed; dW in Acc<T>)
  if (dW) gemm_t<T, A>(true, true, N, K, M, 1.0, dout, N, inp, K, 1.0, dW, K);
  if (dbias) {
    parallel_for(N, 64, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; n++) {
        A s = 0;
        for (int64_t m = 0; m < M; m++) s += A(dout[m * N + n]);
        dbias[n] += s;
      }
    });
  }
}

#define SFT_INSTANTIATE(T)                                                                                          \
  template void add_bias<T>(T*, const T*, int64_t, int64_t);                                                        \
  template void linear_forward<T>(T*, const T*, const T*, const T*, int64_t, int64_t, int64_t, bool);               \
  template void linear_backward<T>(T*, Acc<T>*, Acc<T>*, const T*, const T*, const T*, int64_t, int64_t, int64_t);
SFT_INSTANTIATE(float)
SFT_INSTANTIATE(double)
SFT_INSTANTIATE(bf16)
#undef SFT_INSTANTIATE

}  // namespace sft::cpu
