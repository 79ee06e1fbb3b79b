// Rotary embeddings on the GPU, rotate_half convention (cpu/rope.cpp is the oracle). In place on x;
// the cos/sin tables [max_pos, hd/2] are fp32 whatever T is.
// NOT YET RUN ON A GPU: checked only by test/cuda/test_kernels.cu, which needs one.
#pragma once
#include <cstdint>

#include "cuda/types.h"

namespace sft::cuda {

// x has `rows` rows of stride ld (token b*T_+t at absolute position p0 + t); `heads` heads of hd
// at columns h*hd. Pairs (i, i + hd/2) are rotated by the angle of position and i.
template <typename T>
void rope_forward(T* x, int64_t ld, int64_t rows, int64_t T_, int64_t p0, int heads, int hd, const float* cos,
                  const float* sin, cudaStream_t stream = 0);
// The rotation by the negative angle (the transpose of the forward's).
template <typename T>
void rope_backward(T* dx, int64_t ld, int64_t rows, int64_t T_, int64_t p0, int heads, int hd, const float* cos,
                   const float* sin, cudaStream_t stream = 0);

}  // namespace sft::cuda
