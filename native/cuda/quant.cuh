// NF4 (QLoRA / bitsandbytes layout) quantization and dequantization on the GPU; cpu/quant.{h,cpp} is the oracle and
// documents the format: blocks of 64 weights with one absmax each, element 2j in the HIGH nibble of
// byte j, and with double quantization absmax = code[absmax_q[b]] * absmax2[b / 256] + offset,
// code being bitsandbytes' signed dynamic map (cpu::dynamic_map_signed(), 256 floats, which the
// caller uploads once: the kernels take it as a device pointer, as bitsandbytes' do).
// The products use IEEE-rounded multiply/add intrinsics, so the fp32 results equal the CPU's bit
// for bit.
// NOT YET RUN ON A GPU: checked under the CPU emulator (test/cuda/test_nf4_quant.cu, test_kernels.cu).
#pragma once
#include <cstdint>

#include "cuda/types.h"

namespace sft::cuda {

// absmax[b] = code[absmax_q[b]] * absmax2[b / 256] + offset, for b < blocks (decode once at load).
void nf4_decode_absmax(float* absmax, const uint8_t* absmax_q, const float* absmax2, const float* code,
                       float offset, int64_t blocks, cudaStream_t stream = 0);
// out[j] = NF4[nibble i] * absmax[i / 64] for i = first + j, j < n (T = float or bf16): elements
// [first, first + n) of the tensor (first = 0: all of it).
template <typename T>
void nf4_dequantize(T* out, const uint8_t* packed, const float* absmax, int64_t n, cudaStream_t stream = 0,
                    int64_t first = 0);
// The same with the double-quantized scales decoded on the fly (no fp32 absmax array on the GPU).
template <typename T>
void nf4_dequantize_dq(T* out, const uint8_t* packed, const uint8_t* absmax_q, const float* absmax2,
                       const float* code, float offset, int64_t n, cudaStream_t stream = 0, int64_t first = 0);

// Quantization, bit-identical to cpu::nf4_quantize_tensor (a checkpoint quantized on the GPU while it
// loads equals the CPU's). nf4_quantize: packed[ceil(n/2)] and absmax[ceil(n/64)] of x[n] (T = float
// or bf16, widened exactly); one warp per 64-block, a byte per lane.
template <typename T>
void nf4_quantize(uint8_t* packed, float* absmax, const T* x, int64_t n, cudaStream_t stream = 0);
// Double quantization of those scales, in place: offset[0] = mean of absmax[0, blocks) (summed in
// double in index order, as the CPU does: one thread, ~1 ms per million blocks), absmax_q[blocks]
// and absmax2[ceil(blocks/256)] of absmax - offset with the signed dynamic map `code`, and absmax
// overwritten with what compute uses: code[absmax_q] * absmax2 + offset.
void nf4_double_quantize(uint8_t* absmax_q, float* absmax2, float* offset, float* absmax, const float* code,
                         int64_t blocks, cudaStream_t stream = 0);

}  // namespace sft::cuda
