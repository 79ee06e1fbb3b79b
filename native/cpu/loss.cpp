// Cross-entropy with ignore index, fused with its backward: each row's logits are turned into
// scale * (softmax - onehot) in place, so training never holds logits and dlogits at once.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/threads.h"
#include "cpu/ops.h"

namespace sft::cpu {

template <typename T>
double cross_entropy(T* logits, const int32_t* targets, int64_t N, int64_t V, T scale, bool grad,
                     int64_t* count) {
  std::vector<double> row_loss(N, 0.0);
  std::vector<char> counted(N, 0);
  parallel_for(N, 4, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      T* x = logits + n * V;
      const int32_t t = targets[n];
      if (t < 0) {
        if (grad) std::fill(x, x + V, T(0));
        continue;
      }
      T mx = x[0];
      for (int64_t v = 1; v < V; v++) mx = std::max(mx, x[v]);
      double sum = 0;
      for (int64_t v = 0; v < V; v++) sum += std::exp(double(x[v] - mx));
      const double lse = double(mx) + std::log(sum);
      row_loss[n] = lse - double(x[t]);
      counted[n] = 1;
      if (grad) {
        for (int64_t v = 0; v < V; v++) x[v] = scale * T(std::exp(double(x[v]) - lse));
        x[t] -= scale;
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

}  // namespace sft::cpu
