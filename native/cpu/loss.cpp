// Cross-entropy with ignore index, fused with its backward: each row's logits are turned into
// scale * (softmax - onehot) in place, so training never holds logits and dlogits at once. bf16
// logits are widened as read (the row's max and sum in fp32/double) and the gradient rounded once.
// Rows are independent: the model runs it on one chunk of rows at a time (model/decoder.h,
// head_loss) and sums the per-row losses once at the end, in row order, whatever the chunking.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "core/threads.h"
#include "cpu/ops.h"

namespace sft::cpu {

template <typename T>
void cross_entropy_rows(T* logits, const int32_t* targets, int64_t N, int64_t V, Acc<T> scale, bool grad,
                        double* row_loss) {
  using A = Acc<T>;
  parallel_for(N, 4, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      T* x = logits + n * V;
      const int32_t t = targets[n];
      row_loss[n] = 0;
      if (t < 0) {
        if (grad) std::fill(x, x + V, T(0.0f));
        continue;
      }
      A mx = A(x[0]);
      for (int64_t v = 1; v < V; v++) mx = std::max(mx, A(x[v]));
      double sum = 0;
      for (int64_t v = 0; v < V; v++) sum += std::exp(double(A(x[v]) - mx));
      const double lse = double(mx) + std::log(sum);
      row_loss[n] = lse - double(A(x[t]));
      if (grad) {
        const A xt = A(x[t]);
        for (int64_t v = 0; v < V; v++) x[v] = T(scale * A(std::exp(double(A(x[v])) - lse)));
        if constexpr (std::is_same<T, A>::value) {
          x[t] -= scale;
        } else {  // p - scale from the unrounded p: near p = 1 a rounded p would cancel to 0
          const A p = scale * A(std::exp(double(xt) - lse));
          x[t] = T(p - scale);
        }
      }
    }
  });
}

double loss_total(const double* row_loss, const int32_t* targets, int64_t N, int64_t* count) {
  double total = 0;  // summed in row order: the result depends neither on threads nor on chunks
  int64_t c = 0;
  for (int64_t n = 0; n < N; n++) {
    total += row_loss[n];
    c += targets[n] >= 0;
  }
  if (count) *count = c;
  return total;
}

template <typename T>
double cross_entropy(T* logits, const int32_t* targets, int64_t N, int64_t V, Acc<T> scale, bool grad,
                     int64_t* count) {
  std::vector<double> row_loss(size_t(N > 0 ? N : 0));
  cross_entropy_rows<T>(logits, targets, N, V, scale, grad, row_loss.data());
  return loss_total(row_loss.data(), targets, N, count);
}

template void cross_entropy_rows<float>(float*, const int32_t*, int64_t, int64_t, float, bool, double*);
template void cross_entropy_rows<double>(double*, const int32_t*, int64_t, int64_t, double, bool, double*);
template void cross_entropy_rows<bf16>(bf16*, const int32_t*, int64_t, int64_t, float, bool, double*);
template double cross_entropy<float>(float*, const int32_t*, int64_t, int64_t, float, bool, int64_t*);
template double cross_entropy<double>(double*, const int32_t*, int64_t, int64_t, double, bool, int64_t*);
template double cross_entropy<bf16>(bf16*, const int32_t*, int64_t, int64_t, float, bool, int64_t*);

}  // namespace sft::cpu
