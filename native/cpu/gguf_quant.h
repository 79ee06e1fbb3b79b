// GGUF (llama.cpp) tensor encodings, for `sft export --format gguf`: F16, Q8_0, Q5_0, Q4_K and Q6_K
// rows, each encoded and decoded as ggml's reference code does (ggml-quants.c, quantize_row_*_ref:
// the deterministic quantizers llama.cpp uses when no importance matrix is given), so that a file
// written here dequantizes in llama.cpp to what sft's own decoder says.
//
// Block layouts (bytes; d/dmin are IEEE half floats, little-endian):
//   Q8_0  32 values:  d, int8 q[32]                                   v = d q
//   Q5_0  32 values:  d, uint32 qh (bit 5 of value j), 16 nibble pairs  v = d (q - 16)
//   Q4_K 256 values:  d, dmin, 12 bytes of 6-bit scale/min for 8 sub-blocks of 32, 128 nibble pairs
//                                                                     v = d sc q - dmin m
//   Q6_K 256 values:  128 low nibbles, 64 bytes of high 2-bit pairs, int8 scales[16], d
//                                                                     v = d scale (q - 32)
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace sft::gguf {

// ggml_type ids of the encodings (gguf-py's GGMLQuantizationType).
enum class QType : uint32_t { F32 = 0, F16 = 1, Q5_0 = 6, Q8_0 = 8, Q4_K = 12, Q6_K = 14 };

QType parse_qtype(const std::string& name);  // "f32", "f16", "q8_0", "q5_0", "q4_K", "q6_K"
int64_t block_values(QType t);               // values per block (1 for f32/f16)
int64_t block_bytes(QType t);                // bytes per block
// Bytes of a row of `cols` values; throws when cols is not a multiple of the block size.
int64_t row_bytes(QType t, int64_t cols);

uint16_t fp32_to_fp16(float f);  // round to nearest even, as F16C and numpy do
float fp16_to_fp32(uint16_t h);

// rows x cols values (row-major) encoded into out (rows * row_bytes bytes), rows in parallel.
void quantize(QType t, const float* x, int64_t rows, int64_t cols, uint8_t* out);
// The inverse: out gets rows x cols floats.
void dequantize(QType t, const uint8_t* in, int64_t rows, int64_t cols, float* out);

}  // namespace sft::gguf
