// NF4 quantization (one warp per 64-block; the double quantization one block per 256 scales) and
// dequantization (one thread per weight, grid-stride).
#include "cuda/quant.cuh"
#include "cuda/common.cuh"
#include "core/nf4_codes.h"
#include "cuda/dynamic_map.cuh"

#include <stdexcept>

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

// out[j] = element first + j of the tensor: one thread per weight (any first, so that rows of a
// tensor decode on their own: nf4_decode_rows).
template <typename T, bool kDouble>
__global__ void nf4_kernel(T* out, const uint8_t* packed, const float* absmax, const uint8_t* absmax_q,
                           const float* absmax2, const float* code, float offset, int64_t first, int64_t n) {
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < n; j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = first + j;
    const uint8_t byte = packed[i >> 1];
    const float a = kDouble ? dq_absmax(absmax_q, absmax2, code, offset, i / kBlock) : absmax[i / kBlock];
    out[j] = from_f32<T>(__fmul_rn(kNF4Dev[(i & 1) ? (byte & 15) : (byte >> 4)], a));
  }
}

// cpu::nf4_index: the first code whose midpoint with the next is not below v (ties go low).
__device__ __forceinline__ uint8_t nf4_index_dev(float v) {
  uint8_t i = 0;
  while (i < 15 && v > __fmul_rn(0.5f, __fadd_rn(kNF4Dev[i], kNF4Dev[i + 1]))) i++;
  return i;
}

// One warp per 64-block: lane j holds elements 2j and 2j+1 and writes byte j. The max is exact in
// any order; the scale's reciprocal and the products are IEEE-rounded as on the CPU.
template <typename T>
__global__ void nf4_quantize_kernel(uint8_t* packed, float* absmax, const T* x, int64_t n, int64_t blocks) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t b = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); b < blocks; b += warps) {
    const int64_t i = b * kBlock + 2 * lane;
    const float x0 = i < n ? to_f32(x[i]) : 0.f, x1 = i + 1 < n ? to_f32(x[i + 1]) : 0.f;
    const float m = warp_max(fmaxf(fabsf(x0), fabsf(x1)));
    const float inv = m > 0 ? __fdiv_rn(1.0f, m) : 0.0f;
    if (lane == 0) absmax[b] = m;
    if (i < n) {
      const uint8_t hi = nf4_index_dev(__fmul_rn(x0, inv));
      const uint8_t lo = i + 1 < n ? nf4_index_dev(__fmul_rn(x1, inv)) : 0;
      packed[i / 2] = uint8_t(hi << 4 | lo);
    }
  }
}

// The CPU's mean: a double sum in index order, so one thread does it.
__global__ void absmax_mean_kernel(float* offset, const float* absmax, int64_t blocks) {
  double sum = 0;
  for (int64_t b = 0; b < blocks; b++) sum += double(absmax[b]);
  *offset = float(sum / double(blocks));
}

// One block of 256 threads per 256 scales: the centred scales' absmax, their 8-bit codes, and the
// decoded scales compute uses.
__global__ void double_quant_kernel(uint8_t* absmax_q, float* absmax2, const float* offset, float* absmax,
                                    const float* code, int64_t blocks) {
  __shared__ float red[32];
  const int64_t b = int64_t(blockIdx.x) * kBlock2 + threadIdx.x;
  const float off = *offset;
  const float c = b < blocks ? __fadd_rn(absmax[b], -off) : 0.f;
  const float m = block_max(fabsf(c), red);
  const float inv = m > 0 ? __fdiv_rn(1.0f, m) : 0.0f;
  if (threadIdx.x == 0) absmax2[blockIdx.x] = m;
  if (b < blocks) {
    const uint8_t q = map_index_dev(code, __fmul_rn(c, inv));
    absmax_q[b] = q;
    absmax[b] = __fadd_rn(__fmul_rn(code[q], m), off);
  }
}

}  // namespace

template <typename T>
void nf4_quantize(uint8_t* packed, float* absmax, const T* x, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  SFT_LAUNCH(grid_for(blocks, 8), 256, 0, stream, nf4_quantize_kernel<T>)(packed, absmax, x, n, blocks);
  SFT_CUDA_CHECK_LAUNCH("nf4_quantize");
}

void nf4_double_quantize(uint8_t* absmax_q, float* absmax2, float* offset, float* absmax, const float* code,
                         int64_t blocks, cudaStream_t stream) {
  if (blocks <= 0) return;
  SFT_LAUNCH(1, 1, 0, stream, absmax_mean_kernel)(offset, absmax, blocks);
  SFT_CUDA_CHECK_LAUNCH("nf4_double_quantize mean");
  const int64_t groups = (blocks + kBlock2 - 1) / kBlock2;
  if (groups > 2147483647LL) throw std::runtime_error("nf4_double_quantize: too many blocks");
  SFT_LAUNCH(unsigned(groups), int(kBlock2), 0, stream, double_quant_kernel)(absmax_q, absmax2, offset, absmax, code, blocks);
  SFT_CUDA_CHECK_LAUNCH("nf4_double_quantize");
}

template void nf4_quantize<float>(uint8_t*, float*, const float*, int64_t, cudaStream_t);
template void nf4_quantize<bf16>(uint8_t*, float*, const bf16*, int64_t, cudaStream_t);

void nf4_decode_absmax(float* absmax, const uint8_t* absmax_q, const float* absmax2, const float* code,
                       float offset, int64_t blocks, cudaStream_t stream) {
  if (blocks <= 0) return;
  SFT_LAUNCH(grid_for(blocks, 256), 256, 0, stream, decode_absmax_kernel)(absmax, absmax_q, absmax2, code, offset, blocks);
  SFT_CUDA_CHECK_LAUNCH("nf4_decode_absmax");
}

template <typename T>
void nf4_dequantize(T* out, const uint8_t* packed, const float* absmax, int64_t n, cudaStream_t stream, int64_t first) {
  if (n <= 0) return;
  SFT_LAUNCH(grid_for(n, 256), 256, 0, stream, nf4_kernel<T, false>)(out, packed, absmax, nullptr, nullptr, nullptr, 0.f,
                                                            first, n);
  SFT_CUDA_CHECK_LAUNCH("nf4_dequantize");
}

template <typename T>
void nf4_dequantize_dq(T* out, const uint8_t* packed, const uint8_t* absmax_q, const float* absmax2,
                       const float* code, float offset, int64_t n, cudaStream_t stream, int64_t first) {
  if (n <= 0) return;
  SFT_LAUNCH(grid_for(n, 256), 256, 0, stream, nf4_kernel<T, true>)(out, packed, nullptr, absmax_q, absmax2, code, offset,
                                                           first, n);
  SFT_CUDA_CHECK_LAUNCH("nf4_dequantize_dq");
}

template void nf4_dequantize<float>(float*, const uint8_t*, const float*, int64_t, cudaStream_t, int64_t);
template void nf4_dequantize<bf16>(bf16*, const uint8_t*, const float*, int64_t, cudaStream_t, int64_t);
template void nf4_dequantize_dq<float>(float*, const uint8_t*, const uint8_t*, const float*, const float*, float,
                                       int64_t, cudaStream_t, int64_t);
template void nf4_dequantize_dq<bf16>(bf16*, const uint8_t*, const uint8_t*, const float*, const float*, float,
                                      int64_t, cudaStream_t, int64_t);

}  // namespace sft::cuda
