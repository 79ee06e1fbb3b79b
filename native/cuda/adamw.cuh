// AdamW and the global gradient norm on the GPU (cpu/adamw.cpp is the oracle). Parameters, their
// gradients and both moments are fp32 (the trainable tensors: LoRA, or fp32 master weights).
// NOT YET RUN ON A GPU: checked only by test/cuda/test_kernels.cu, which needs one.
#pragma once
#include <cstdint>

#include "cuda/types.h"

namespace sft::cuda {

// One AdamW step as torch.optim.AdamW computes it; g is multiplied by grad_scale first
// (global-norm clipping). t is the 1-based step number. Fused: one pass over p, g, m, v.
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, double lr, double b1, double b2,
                  double eps, double weight_decay, int64_t t, double grad_scale, cudaStream_t stream = 0);

// adamw_update plus p_copy[i] = bf16(p[i]) (round to nearest even) of each updated parameter, in
// the same pass: fp32 master weights with bf16 compute copies. p, m, v come out bit-identical to
// adamw_update's (one kernel body for both).
void adamw_update_copy(float* p, bf16* p_copy, const float* g, float* m, float* v, int64_t n, double lr, double b1,
                       double b2, double eps, double weight_decay, int64_t t, double grad_scale,
                       cudaStream_t stream = 0);

// 8-bit AdamW, as cpu::adamw_update_8bit: m8/v8 (n codes) and m_absmax/v_absmax (one scale per 256
// elements) are bitsandbytes' blockwise states, smap/umap the signed and unsigned dynamic maps
// (cpu::dynamic_map_signed/unsigned, 256 floats each on the device). Each 256-block is decoded,
// updated as adamw_update does, and re-quantized with its new max |m| and max v.
void adamw_update_8bit(float* p, const float* g, uint8_t* m8, float* m_absmax, uint8_t* v8, float* v_absmax,
                       const float* smap, const float* umap, int64_t n, double lr, double b1, double b2, double eps,
                       double weight_decay, int64_t t, double grad_scale, cudaStream_t stream = 0);

// sqrt(sum of squares) over `count` device tensors (grads[i] has sizes[i] elements; both arrays on
// the host). Two launches in all, whatever the count; the summation order is fixed (per tensor a
// fixed number of chunks, then all partials in order), so the norm is repeatable. Waits for the
// stream and returns the host value: clipping needs it once per optimizer step.
double global_grad_norm(const float* const* grads, const int64_t* sizes, int count, cudaStream_t stream = 0);

}  // namespace sft::cuda
