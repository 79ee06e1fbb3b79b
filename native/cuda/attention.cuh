// Causal grouped-query attention (and ALiBi attention, Bloom) on the GPU, FlashAttention-2 style
// (cpu/attention.cpp is the oracle): the forward runs an online softmax over key blocks and never
// forms the Tq x Tk matrix; like the CPU's it saves each row's logsumexp, and the backward
// recomputes the probabilities from it.
//
// Layouts are the CPU's: q is B*Tq rows of stride ldq (head h at column h*hd); k, v are B*Tk rows
// of stride ldkv (kv head g at column g*hd); query head h reads kv head h / (nh / nkv); query i is
// at position p0 + i and sees keys 0..p0+i (Tk >= p0 + Tq: p0 > 0 is the KV-cache case). out is
// [B*Tq, nh*hd]. T = float or bf16, computed in fp32.
//
// bf16 at head_dim 64 and 128 runs on tensor cores (attention_mma.cu: mma.sync, ldmatrix,
// cp.async; sm_80+) when every row starts 16-byte aligned (pointers 16-byte aligned, ldq and ldkv
// multiples of 8); otherwise, and for fp32, head_dim 64 and 128 run shared-memory tiled SIMT
// kernels; any other head_dim up to 256 runs a generic kernel (one warp per row, no tiling: slow,
// for tiny test models). The backward is deterministic:
// dK/dV are owned by (batch, kv head, key block) and dQ by (batch, head, query block), each summing
// in a fixed order, with no atomics (dQ recomputes the probabilities a second time for that).
//
// The SIMT kernels use fp32 FMAs; the tensor-core kernels round P and dS to bf16 for their
// products, as FlashAttention-2 does. Both backwards are deterministic (no atomics).
// NOT YET RUN ON A GPU: checked by test/cuda/test_kernels.cu under the CPU emulator only.
#pragma once
#include <cstdint>

#include "cuda/types.h"

namespace sft::cuda {

// lse: [B, nh, Tq] fp32 logsumexp of each row's scaled scores (saved for backward), or null.
template <typename T>
void attention_forward(T* out, float* lse, const T* q, int64_t ldq, const T* k, const T* v, int64_t ldkv, int64_t B,
                       int64_t Tq, int64_t Tk, int64_t p0, int nh, int nkv, int hd, cudaStream_t stream = 0);

// dq, dk, dv use q/k/v's layouts and are accumulated (+=). out and lse are the forward's.
template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const float* lse, const T* q, int64_t ldq,
                        const T* k, const T* v, int64_t ldkv, int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh,
                        int nkv, int hd, cudaStream_t stream = 0);

// The generic kernels for any head_dim <= 256 (what the two above use outside 64 and 128); public
// so the test can check them on head dims the tiled kernels also cover.
template <typename T>
void attention_forward_generic(T* out, float* lse, const T* q, int64_t ldq, const T* k, const T* v, int64_t ldkv,
                               int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh, int nkv, int hd,
                               cudaStream_t stream = 0);
template <typename T>
void attention_backward_generic(T* dq, T* dk, T* dv, const T* dout, const T* out, const float* lse, const T* q,
                                int64_t ldq, const T* k, const T* v, int64_t ldkv, int64_t B, int64_t Tq, int64_t Tk,
                                int64_t p0, int nh, int nkv, int hd, cudaStream_t stream = 0);

// Causal attention with ALiBi (Bloom), one k/v head per query head, exactly cpu::alibi_attention_*'s
// semantics: score(i, j) = q_i.k_j / sqrt(hd) + slopes[h] * j, where j is the key's absolute
// position (0 = first token). Each head has its own column stride: head h's q (and dq) at column
// h*qhs of a q row, its k, v (and dk, dv) at h*kvhs of a k/v row (Bloom's fused query_key_value rows:
// ldq = ldkv = 3*H, qhs = kvhs = 3*hd, k = q + hd, v = q + 2*hd; a KV cache: ldkv = H, kvhs = hd).
// slopes: nh fp32 on the device (cpu::alibi_slopes<float>). lse [B, nh, Tq] is the logsumexp of the
// biased scaled scores, or null. Runs the generic kernels for every head_dim (1..256): the tiled
// kernels take neither head strides nor slopes yet.
template <typename T>
void alibi_attention_forward(T* out, float* lse, const T* q, int64_t ldq, int64_t qhs, const T* k, const T* v,
                             int64_t ldkv, int64_t kvhs, const float* slopes, int64_t B, int64_t Tq, int64_t Tk,
                             int64_t p0, int nh, int hd, cudaStream_t stream = 0);
// dq, dk, dv (+=) in q/k/v's layouts. Like the CPU's this
// needs the slopes: it recomputes the probabilities from lse. Deterministic, no atomics; the
// temporary is attention_backward's (B * nh * Tq floats).
template <typename T>
void alibi_attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const float* lse, const T* q,
                              int64_t ldq, int64_t qhs, const T* k, const T* v, int64_t ldkv, int64_t kvhs,
                              const float* slopes, int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh, int hd,
                              cudaStream_t stream = 0);

}  // namespace sft::cuda
