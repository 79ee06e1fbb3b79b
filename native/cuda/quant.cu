// NF4 dequantization: one thread per packed byte (two weights), grid-stride.
#include "cuda/quant.cuh"
#include "cuda/common.cuh"
#include "core/nf4_codes.h"

namespace sft::cuda {
namespace {

// The 16 NF4 code values, one definition with cpu::kNF4 (core/nf4_codes.h).
__constant__ float kNF4Dev[16] = SFT_NF4_CODES;

constexpr int64_t kBlock = 64, kBlock2 = 256;

__device__ __forceinline__ float dq_absmax(const uint8_t* absmax_q, const float* absmax2, const float* code,
                                           float offset, int64_t b) {
  return __fadd_rn(__fmul_rn(code[absmax_q[b]], absmax2[b / kBlock2]), offset);
}

__global__ void decode_absmax_kernel(float* absmax, const uint8_t* absmax_q, const float* absmax2,
                                     const float* code, float offset, int64_t blocks) {
  for (int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; b < blocks; b += int64_t(gridDim.x) * blockDim.x)
    absmax[b] = dq_absmax(absmax_q, absmax2, code, offset, b);
}

// Both weights of a byte lie in one 64-block (64 is even), so one scale serves the pair.
template <typename T, bool kDouble>
__global__ void nf4_kernel(T* out, const uint8_t* packed, const float* absmax, const uint8_t* absmax_q,
                           const float* absmax2, const float* code, float offset, int64_t n) {
  const int64_t bytes = (n + 1) / 2;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < bytes; j += int64_t(gridDim.x) * blockDim.x) {
    const uint8_t byte = packed[j];
    const int64_t i = 2 * j;
    const float a = kDouble ? dq_absmax(absmax_q, absmax2, code, offset, i / kBlock) : absmax[i / kBlock];
    out[i] = from_f32<T>(__fmul_rn(kNF4Dev[byte >> 4], a));
    if (i + 1 < n) out[i + 1] = from_f32<T>(__fmul_rn(kNF4Dev[byte & 15], a));
  }
}

}  // namespace

void nf4_decode_absmax(float* absmax, const uint8_t* absmax_q, const float* absmax2, const float* code,
                       float offset, int64_t blocks, cudaStream_t stream) {
  if (blocks <= 0) return;
  SFT_LAUNCH(grid_for(blocks, 256), 256, 0, stream, decode_absmax_kernel)(absmax, absmax_q, absmax2, code, offset, blocks);
  SFT_CUDA_CHECK_LAUNCH("nf4_decode_absmax");
}

template <typename T>
void nf4_dequantize(T* out, const uint8_t* packed, const float* absmax, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  SFT_LAUNCH(grid_for((n + 1) / 2, 256), 256, 0, stream, nf4_kernel<T, false>)(out, packed, absmax, nullptr, nullptr,
                                                                      nullptr, 0.f, n);
  SFT_CUDA_CHECK_LAUNCH("nf4_dequantize");
}

template <typename T>
void nf4_dequantize_dq(T* out, const uint8_t* packed, const uint8_t* absmax_q, const float* absmax2,
                       const float* code, float offset, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  SFT_LAUNCH(grid_for((n + 1) / 2, 256), 256, 0, stream, nf4_kernel<T, true>)(out, packed, nullptr, absmax_q, absmax2,
                                                                     code, offset, n);
  SFT_CUDA_CHECK_LAUNCH("nf4_dequantize_dq");
}

template void nf4_dequantize<float>(float*, const uint8_t*, const float*, int64_t, cudaStream_t);
template void nf4_dequantize<bf16>(bf16*, const uint8_t*, const float*, int64_t, cudaStream_t);
template void nf4_dequantize_dq<float>(float*, const uint8_t*, const uint8_t*, const float*, const float*, float,
                                       int64_t, cudaStream_t);
template void nf4_dequantize_dq<bf16>(bf16*, const uint8_t*, const uint8_t*, const float*, const float*, float,
                                      int64_t, cudaStream_t);

}  // namespace sft::cuda
