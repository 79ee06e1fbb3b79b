// Every op of the CPU backend: forward and backward side by side, llm.c style
// (outputs first, then inputs, then sizes). Backward functions ADD into their gradient
// outputs (+=) so residual and shared-input gradients accumulate naturally; a null
// gradient pointer means "not needed" (frozen weight).
//
// Element types: T is the storage of activations and frozen weights (float, double, or bf16);
// Acc<T> is what the op computes in and what it keeps of its own (statistics, logsumexp, rotary
// and ALiBi tables, gradients of weights, which are trainable: the optimizer's precision). For
// float and double Acc<T> = T; for bf16 it is float: values are widened on load (exact) and
// each output rounded to bf16 once, from the fp32 result (as PyTorch's CPU autocast and the CUDA
// backend's bf16 kernels do). Activation gradients (dx, dq, ...) are stored as T like activations.
//
// Where each op lives:           forward            backward
//   linear (matmul + bias)       linear.cpp         linear.cpp
//   RMSNorm                      norm.cpp           norm.cpp
//   LayerNorm (Bloom)            norm.cpp           norm.cpp
//   rotary embeddings            rope.cpp           rope.cpp
//   causal GQA attention         attention.cpp      attention.cpp
//   causal ALiBi attention       attention.cpp      attention.cpp
//   SwiGLU                       act.cpp            act.cpp
//   GELU, tanh form (Bloom)      act.cpp            act.cpp
//   token embedding              embed.cpp          embed.cpp
//   cross-entropy (fused)        loss.cpp           loss.cpp
//   row L2-normalise (NormHead)  norm.cpp           norm.cpp
//   AdamW                        adamw.cpp
#pragma once
#include <cstdint>

#include "cpu/bf16.h"

namespace sft::cpu {

template <typename T>
struct AccOf {
  using type = T;
};
template <>
struct AccOf<bf16> {
  using type = float;
};
template <typename T>
using Acc = typename AccOf<T>::type;

// out[M,N] (=, or += when accumulate) inp[M,K] . W[N,K]^T + bias[N] (bias may be null)
template <typename T>
void linear_forward(T* out, const T* inp, const T* W, const T* bias, int64_t M, int64_t K, int64_t N,
                    bool accumulate = false);
// out[M,N] += bias[N] for every row
template <typename T>
void add_bias(T* out, const T* bias, int64_t M, int64_t N);
// dinp[M,K] += dout[M,N] . W[N,K];  dW[N,K] += dout^T . inp;  dbias[N] += sum_m dout
template <typename T>
void linear_backward(T* dinp, Acc<T>* dW, Acc<T>* dbias, const T* dout, const T* inp, const T* W, int64_t M,
                     int64_t K, int64_t N);

// y = w * x / sqrt(mean(x^2) + eps), per row of C; rstd[N] saved for backward.
template <typename T>
void rmsnorm_forward(T* out, Acc<T>* rstd, const T* inp, const T* w, int64_t N, int64_t C, double eps);
template <typename T>
void rmsnorm_backward(T* dinp, Acc<T>* dw, const T* dout, const T* inp, const T* w, const Acc<T>* rstd, int64_t N,
                      int64_t C);

// y = w * (x - mean(x)) / sqrt(var(x) + eps) + b per row of C (biased variance, as torch's
// LayerNorm); mean[N] and rstd[N] saved for backward. db may be null like dw.
template <typename T>
void layernorm_forward(T* out, Acc<T>* mean, Acc<T>* rstd, const T* inp, const T* w, const T* b, int64_t N, int64_t C,
                       double eps);
template <typename T>
void layernorm_backward(T* dinp, Acc<T>* dw, Acc<T>* db, const T* dout, const T* inp, const T* w,
                        const Acc<T>* mean, const Acc<T>* rstd, int64_t N, int64_t C);

// out[r] = in[r] / max(||in[r]||, eps) for each of R rows of C (Baichuan2's NormHead).
template <typename T>
void l2norm_rows_forward(T* out, const T* in, int64_t R, int64_t C, double eps);
template <typename T>
void l2norm_rows_backward(Acc<T>* din, const Acc<T>* dout, const T* in, int64_t R, int64_t C, double eps);

// Rotary embeddings in place, rotate_half convention (pairs i and i + hd/2).
// x has `rows` rows (token b*T+t at absolute position p0 + t) of stride ld; `heads` heads of hd
// at columns h*hd. cos/sin tables are [max_pos, hd/2]. Backward rotates by the negative angle.
template <typename T>
void rope_forward(T* x, int64_t ld, int64_t rows, int64_t T_, int64_t p0, int heads, int hd,
                  const Acc<T>* cos, const Acc<T>* sin);
template <typename T>
void rope_backward(T* dx, int64_t ld, int64_t rows, int64_t T_, int64_t p0, int heads, int hd,
                   const Acc<T>* cos, const Acc<T>* sin);

// Causal attention with grouped-query heads. q: B*Tq rows of stride ldq (head h at column h*hd);
// k, v: B*Tk rows of stride ldkv (kv head g at column g*hd). Query i is at position p0 + i and
// sees keys 0..p0+i (Tk >= p0 + Tq). out: [B*Tq, nh*hd]. lse: [B, nh, Tq] logsumexp of each row's
// scaled scores, saved for backward, or null (inference). Tiled: no Tq x Tk matrix is formed.
template <typename T>
void attention_forward(T* out, Acc<T>* lse, const T* q, int64_t ldq, const T* k, const T* v, int64_t ldkv,
                       int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh, int nkv, int hd);
// dq/dk/dv use the same layouts as q/k/v and are accumulated (+=). out and lse are the forward's:
// the probabilities are recomputed from them block by block.
template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const Acc<T>* lse, const T* q, int64_t ldq,
                        const T* k, const T* v, int64_t ldkv, int64_t B, int64_t Tq, int64_t Tk,
                        int64_t p0, int nh, int nkv, int hd);

// ALiBi (Bloom): slopes of n heads. p = 2^floor(log2 n), slopes (2^(-8/p))^1..p, then, when
// n > p, (2^(-4/p))^1, ^3, ^5, ... for the remaining n - p heads. Computed in T's precision
// (float: fp32 powers of an fp32 base, as transformers' build_alibi_tensor).
template <typename T>
void alibi_slopes(T* out, int n);

// Causal attention with ALiBi, one k/v head per query head: score(i, j) = q_i.k_j / sqrt(hd) +
// slopes[h] * j, where j is the key's absolute position (0 = first token; transformers' form,
// which equals slope * (j - i) after the softmax). Rows as in attention_forward, but each head
// has its own stride: head h's q at column h*qhs of a q row, its k and v at h*kvhs of a k/v row
// (Bloom's fused query_key_value rows: ld = 3*H, head stride 3*hd, k = q + hd, v = q + 2*hd).
template <typename T>
void alibi_attention_forward(T* out, Acc<T>* lse, const T* q, int64_t ldq, int64_t qhs, const T* k, const T* v,
                             int64_t ldkv, int64_t kvhs, const Acc<T>* slopes, int64_t B, int64_t Tq, int64_t Tk,
                             int64_t p0, int nh, int hd);
// The backward is attention_backward's, with the same head strides; the slopes recompute the scores.
template <typename T>
void alibi_attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const Acc<T>* lse, const T* q,
                              int64_t ldq, int64_t qhs, const T* k, const T* v, int64_t ldkv, int64_t kvhs,
                              const Acc<T>* slopes, int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh, int hd);

// out = silu(gate) * up, elementwise.
template <typename T>
void swiglu_forward(T* out, const T* gate, const T* up, int64_t n);
template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t n);

// out = 0.5 x (1 + tanh(0.79788456 x (1 + 0.044715 x^2))), elementwise (Bloom's GELU, with its
// constants as transformers writes them).
template <typename T>
void gelu_tanh_forward(T* out, const T* inp, int64_t n);
template <typename T>
void gelu_tanh_backward(T* dinp, const T* dout, const T* inp, int64_t n);

// out[i] = table[ids[i]]
template <typename T>
void embedding_forward(T* out, const int32_t* ids, const T* table, int64_t n, int64_t C);
template <typename T>
void embedding_backward(Acc<T>* dtable, const T* dout, const int32_t* ids, int64_t n, int64_t C);

// Cross-entropy over N rows of V logits; targets < 0 (-100) are ignored. Returns the SUM of the
// counted rows' losses and sets *count. With grad, logits are overwritten in place by
// scale * (softmax - onehot) (zero rows where ignored): the full logits never exist twice.
template <typename T>
double cross_entropy(T* logits, const int32_t* targets, int64_t N, int64_t V, Acc<T> scale, bool grad,
                     int64_t* count);
// The same in two parts, for rows that come in chunks: each row's loss into row_loss[n] (0 where
// ignored), then loss_total sums them in row order and counts the rows with a target.
template <typename T>
void cross_entropy_rows(T* logits, const int32_t* targets, int64_t N, int64_t V, Acc<T> scale, bool grad,
                        double* row_loss);
double loss_total(const double* row_loss, const int32_t* targets, int64_t N, int64_t* count);

// One AdamW step (PyTorch's formulation, decoupled weight decay); g is multiplied by
// grad_scale first (global-norm clipping). t is the 1-based step number.
template <typename T>
void adamw_update(T* p, const T* g, T* m, T* v, int64_t n, double lr, double b1, double b2, double eps,
                  double weight_decay, int64_t t, double grad_scale);

// AdamW with 8-bit blockwise states (bitsandbytes' 8-bit optimizers): m in the signed dynamic map,
// v in the unsigned one, blocks of 256 elements each with an fp32 absmax. Each block is decoded, updated
// exactly as adamw_update does, and re-encoded with its new absmax.
template <typename T>
void adamw_update_8bit(T* p, const T* g, uint8_t* m8, float* m_absmax, uint8_t* v8, float* v_absmax, int64_t n,
                       double lr, double b1, double b2, double eps, double weight_decay, int64_t t, double grad_scale);

}  // namespace sft::cpu
