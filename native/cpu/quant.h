// 4-bit NormalFloat (NF4) weights with double quantization, as QLoRA / bitsandbytes define them:
//  - NF4: blocks of 64 consecutive weights (row-major flattening of each checkpoint tensor), one fp32
//    absmax per block, each weight the index of the nearest of 16 code values of w / absmax; two
//    codes per byte, element 2j in the HIGH nibble and 2j+1 in the low nibble.
//  - double quantization: offset = mean(absmax); (absmax - offset) quantized blockwise (256) with
//    bitsandbytes' signed 8-bit dynamic map and one fp32 scale per 256-block.
// Compute never materialises a dequantized matrix: the GEMM's packing step decodes NF4 tiles
// (see Nf4Weight and gemm_q4 in gemm.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace sft::cpu {

constexpr int64_t kNf4Block = 64;
constexpr int64_t kQ8Block = 256;

// The 16 NF4 code values, index 0..15 (QLoRA appendix; bitsandbytes' NF4 table).
extern const float kNF4[16];

// bitsandbytes' create_dynamic_map(signed=True): 256 sorted values in [-1, 1].
const std::vector<float>& dynamic_map_signed();
// create_dynamic_map(signed=False): 256 sorted values in [0, 1] (8-bit optimizers' second moment).
const std::vector<float>& dynamic_map_unsigned();

// Nearest entry of a sorted map (ties to the lower one).
uint8_t map_index(const std::vector<float>& map, float v);

// Index of the nearest NF4 code of v (v in [-1, 1]); exact midpoints go to the lower code.
uint8_t nf4_index(float v);

// packed[ceil(n/2)], absmax[ceil(n/64)]
void nf4_quantize(uint8_t* packed, float* absmax, const float* x, int64_t n);
void nf4_dequantize(float* x, const uint8_t* packed, const float* absmax, int64_t n);

// Blockwise 8-bit with the dynamic map: q[n], absmax[ceil(n/256)]
void q8_quantize_blockwise(uint8_t* q, float* absmax, const float* x, int64_t n);
void q8_dequantize_blockwise(float* x, const uint8_t* q, const float* absmax, int64_t n);

// One quantized checkpoint tensor (flattened row-major).
struct Nf4Tensor {
  int64_t numel = 0;
  std::vector<uint8_t> packed;    // numel/2 bytes
  bool double_quant = true;
  std::vector<uint8_t> absmax_q;  // double quant: one 8-bit code per 64-block
  std::vector<float> absmax2;     // double quant: one fp32 scale per 256 codes
  float offset = 0;               // double quant: mean of the block absmaxes
  std::vector<float> absmax;      // the per-64-block scales compute uses (decoded once)
  size_t bytes() const;           // storage a GPU copy would need (packed + absmax_q + absmax2 + offset)
};
Nf4Tensor nf4_quantize_tensor(const float* x, int64_t n, bool double_quant);

// A weight matrix [rows, cols] stored as one or more NF4 tensors, each covering whole rows (a fused
// q/k/v matrix keeps q_proj, k_proj and v_proj quantized separately, exactly as bitsandbytes would).
struct Nf4Weight {
  int64_t rows = 0, cols = 0;
  struct Segment {
    int64_t row0, rows;
    Nf4Tensor t;
  };
  std::vector<Segment> segments;
  // Element (r, c), dequantized.
  float at(int64_t r, int64_t c) const;
  // Row r, columns [c0, c0 + n), dequantized into out[n].
  void decode_row(float* out, int64_t r, int64_t c0, int64_t n) const;
  size_t bytes() const;
};

}  // namespace sft::cpu
