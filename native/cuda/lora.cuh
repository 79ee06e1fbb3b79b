// LoRA dropout on the GPU. The masks are never stored: element i is DROPPED when
// sft::rng::uniform01_key(key, i) < p (core/random.h, the counter-based generator the CPU backend
// uses too), so the backward regenerates the forward's mask from (key, i) alone, whatever the
// thread layout. The CPU reference is the CPU backend's dropout loops (cpu/backend.h; formerly
// model/store.h's dropped() and the xd / dxin loops of linear_fwd / linear_bwd): for an adapter with
// seed s at training step `step`,
//   key = sft::rng::stream_key(s, sft::rng::dropout_stream(step))   (model/lora.h's mask_key),
// and i is the element's index in the adapter's [M, in] input (n = M * in). T = float or bf16; kept
// elements are scaled by keep = float(1 / (1 - p)) in fp32 and rounded once to T.
// NOT YET RUN ON A GPU: checked only by test/cuda/test_kernels.cu, which needs one.
#pragma once
#include <cstdint>

#include "cuda/types.h"

namespace sft::cuda {

// out[i] = dropped(i) ? 0 : x[i] * keep (p in [0, 1)).
template <typename T>
void dropout_forward(T* out, const T* x, int64_t n, double p, uint64_t key, cudaStream_t stream = 0);

// dx[i] += dxd[i] * keep where element i was kept (dropped elements get nothing): the backward of
// dropout_forward with the same (n, p, key), for the gradient dxd of its output.
template <typename T>
void dropout_backward_add(T* dx, const T* dxd, int64_t n, double p, uint64_t key, cudaStream_t stream = 0);

}  // namespace sft::cuda
