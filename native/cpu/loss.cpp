// Cross-entropy with ignore index, fused with its backward: each row's logits are turned into
// scale * (softmax - onehot) in place, so training never holds logits and dlogits at once. bf16
// logits are widened as read (the row's max and sum in fp32/double) and the gradient rounded once.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "core/threads.h"
#include "cpu/ops.h"

namespace sft::cpu {

template <typename T>
double cross_entropy(T* logits, const int32_t* targets, int64_t N, int64_t V, Acc<T> scale, bool grad,
                     int64_t* count) {
  using A = Acc<T>;
  std::vector<double> row_loss(N, 0.0);
  std::vector<char> counted(N, 0);
  parallel_for(N, 4, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      T* x = logits + n * V;
      const int32_t t = targets[n];
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
      counted[n] = 1;
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
  double total = 0;  // summed in row order: the result does not depend on the thread count
  int64_t c = 0;
  for (int64_t n = 0; n < N; n++) {
    total += row_loss[n];
    c += counted[n];
  }
  if (count) *count = c;
  return total;
}

template double cross_entropy<float>(float*, const int32_t*, int64_t, int64_t, float, bool, int64_t*);
template double cross_entropy<double>(double*, const int32_t*, int64_t, int64_t, double, bool, int64_t*);
template double cross_entropy<bf16>(bf16*, const int32_t*, int64_t, int64_t, float, bool, int64_t*);

}  // namespace sft::cpu
