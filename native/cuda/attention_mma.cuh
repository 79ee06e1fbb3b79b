// The tensor-core form of causal GQA attention (attention_mma.cu) for bf16 at head_dim 64 and 128:
// what attention.cu's bf16 launchers run when the layout allows it (attention_mma_fits), with the
// same arguments and semantics as cuda::attention_forward / attention_backward (attention.cuh).
#pragma once
#include <cstdint>

#include "cuda/types.h"

namespace sft::cuda {

// Whether the tensor-core kernels take a call: hd 64 or 128, every row start 16-byte aligned
// (pointers 16-byte aligned, ldq and ldkv multiples of 8 elements). Null pointers are skipped.
bool attention_mma_fits(int hd, int64_t ldq, int64_t ldkv, const void* const* ptrs, int n_ptrs);

void attention_forward_mma(bf16* out, float* lse, const bf16* q, int64_t ldq, const bf16* k, const bf16* v,
                           int64_t ldkv, int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh, int nkv, int hd,
                           cudaStream_t stream);

// Dsum [B, nh, Tq] = rowsum(dout * out), computed by the caller (attention.cu).
void attention_backward_mma(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const float* lse, const float* Dsum,
                            const bf16* q, int64_t ldq, const bf16* k, const bf16* v, int64_t ldkv, int64_t B,
                            int64_t Tq, int64_t Tk, int64_t p0, int nh, int nkv, int hd, cudaStream_t stream);

}  // namespace sft::cuda
