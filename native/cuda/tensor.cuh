// Small data-movement ops on the GPU that the model host code needs instead of host loops: type
// casts, strided row copies (KV-cache writes, prompt-tuning rows) and accumulations of one tensor
// into another. There is no single CPU op for these (the CPU model code writes them as plain loops,
// which are the oracle); T = float or bf16 storage, fp32 arithmetic, one rounding per stored value.
// NOT YET RUN ON A GPU: checked only by test/cuda/test_kernels.cu, which needs one.
#pragma once
#include <cstdint>

#include "cuda/types.h"

namespace sft::cuda {

// out[i] = in[i] converted: (Tin, Tout) = (float, bf16) rounds to nearest even; (bf16, float) and
// (float, float) are exact.
// dst[i] = mean + std * z_i, z_i standard normal from core/random.h's stream `key` (Box-Muller on
// elements 2i, 2i + 1, in double): random weights made on the device (benchmarks).
template <typename T>
void fill_normal(T* dst, int64_t n, uint64_t key, double mean, double std_, cudaStream_t stream = 0);

template <typename Tin, typename Tout>
void cast(Tout* out, const Tin* in, int64_t n, cudaStream_t stream = 0);

// dst[r*ld_dst + c] = src[r*ld_src + c] for r < rows, c < cols (rows of strided matrices).
template <typename T>
void copy_2d(T* dst, int64_t ld_dst, const T* src, int64_t ld_src, int64_t rows, int64_t cols,
             cudaStream_t stream = 0);

// dst[i] += src[i]; (TD, TS) = (float, float), (float, bf16), (bf16, bf16).
template <typename TD, typename TS>
void add_into(TD* dst, const TS* src, int64_t n, cudaStream_t stream = 0);

// dst[c] += sum over r < rows of src[r*ld_src + c], for c < cols: rows added in order r = 0, 1, ...
// into an fp32 accumulator that starts from dst[c] (for float dst exactly the CPU's
// `for each r: dst += row r`; bf16 dst is rounded once, at the end). One thread per column; the
// prompt-tuning gradient (a batch's [n, hidden] blocks summed into one) has few rows and many
// columns. (TD, TS) as add_into.
template <typename TD, typename TS>
void add_rows_into(TD* dst, const TS* src, int64_t rows, int64_t cols, int64_t ld_src, cudaStream_t stream = 0);

}  // namespace sft::cuda
