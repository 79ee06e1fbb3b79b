// Fused cross-entropy on the GPU (cpu/loss.cpp is the oracle): per-row logsumexp, loss, and with
// grad the logits overwritten in place by scale * (softmax - onehot); targets < 0 (-100) ignored.
// NOT YET RUN ON A GPU: checked only by test/cuda/test_kernels.cu, which needs one.
#pragma once
#include <cstdint>

#include "cuda/types.h"

namespace sft::cuda {

// The CPU signature: returns the SUM of the counted rows' losses and sets *count (host values; the
// call waits for the stream).
template <typename T>
double cross_entropy(T* logits, const int32_t* targets, int64_t N, int64_t V, float scale, bool grad,
                     int64_t* count, cudaStream_t stream = 0);
// The same without waiting: row_loss[N] (device scratch) receives each row's loss (0 where
// ignored; NaN where a target is >= V), *loss_sum and *count (device) their row-ordered sum.
template <typename T>
void cross_entropy_async(T* logits, const int32_t* targets, int64_t N, int64_t V, float scale, bool grad,
                         double* row_loss, double* loss_sum, long long* count, cudaStream_t stream = 0);
// Its two parts, for rows that come in chunks (model/decoder.h): the row kernel alone (no wait),
// then loss_total's row-ordered sum of row_loss[0, N) and count of rows with a target (host
// values; waits for the stream).
template <typename T>
void cross_entropy_rows(T* logits, const int32_t* targets, int64_t N, int64_t V, float scale, bool grad, double* row_loss,
                        cudaStream_t stream = 0);
double loss_total(const double* row_loss, const int32_t* targets, int64_t N, int64_t* count, cudaStream_t stream = 0);

}  // namespace sft::cuda
