// Token embedding on the GPU (cpu/embed.cpp is the oracle). The table and output are T (float or
// bf16); the table's gradient is fp32.
// NOT YET RUN ON A GPU: checked only by test/cuda/test_kernels.cu, which needs one.
#pragma once
#include <cstdint>

#include "cuda/types.h"

namespace sft::cuda {

// out[i] = table[ids[i]]; ids must lie in [0, vocab) (not checked on the device).
template <typename T>
void embedding_forward(T* out, const int32_t* ids, const T* table, int64_t n, int64_t C, cudaStream_t stream = 0);
// dtable[ids[i]] += dout[i], tokens added in order. Deterministic without sorting or atomics: each
// thread owns one column and walks all n tokens, exactly the CPU's order. Parallelism is C threads,
// so this is latency bound (~n dependent steps); fine for the rare runs that train embeddings (full
// fine-tuning, prompt tuning). If a profile shows it, sort (id, position) pairs with a stable radix
// sort and sum each id's segment instead.
template <typename T>
void embedding_backward(float* dtable, const T* dout, const int32_t* ids, int64_t n, int64_t C,
                        cudaStream_t stream = 0);

}  // namespace sft::cuda
