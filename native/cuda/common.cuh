// Device helpers every kernel file shares (include from .cu files only): fp32 loads and stores of
// either element type, deterministic warp/block reductions, grid sizing. The backend's conventions
// are in ops.cuh.
#pragma once
#include "cuda/types.h"

// Kernel launches and dynamic shared memory go through these two macros so that the same kernels
// also compile as plain C++ under test/cuda/emu: a CPU emulator running each block's threads as
// fibers, which checks the kernels' logic against the CPU backend on machines without a GPU.
#ifdef SFT_CUDA_EMULATE
#define SFT_LAUNCH(grid, block, smem, stream, ...) ::sft_emu::launch(grid, block, smem, __VA_ARGS__)
#define SFT_DYNAMIC_SMEM(type, name) type* name = static_cast<type*>(::sft_emu::dynamic_smem())
#else
#define SFT_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#define SFT_DYNAMIC_SMEM(type, name) extern __shared__ type name[]
#endif

namespace sft::cuda {

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16 from_f32<bf16>(float x) {
  return __float2bfloat16_rn(x);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. `red` is 32 elements of shared memory; the function synchronises before reusing it, so
// back-to-back calls with one buffer are safe.
template <typename F>
__device__ __forceinline__ F block_sum(F v, F* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  F t = lane < nw ? red[lane] : F(0);
  return warp_sum(t);
}

__device__ __forceinline__ float block_max(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = lane < nw ? red[lane] : -INFINITY;
  return warp_max(t);
}

// Rows per chunk of the deterministic column sums: a function of the row count only (never of the
// device), so the summation order is fixed; at most 64 chunks.
inline int64_t rows_per_chunk_for(int64_t rows) {
  const int64_t r = (rows + 63) / 64;
  return r > 32 ? r : 32;
}

// The second pass of the deterministic column sums (norm weights, biases): dst[c] += sum over k
// of partial[k * C + c], chunks in order (norm.cu).
void add_chunk_sums(float* dst, const float* partial, int64_t chunks, int64_t C, cudaStream_t stream);

// Blocks for a grid-stride elementwise loop over n items with `threads` per block.
inline unsigned grid_for(int64_t n, int threads, int64_t max_blocks = 65535LL * 16) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  return unsigned(b < max_blocks ? b : max_blocks);
}

}  // namespace sft::cuda
