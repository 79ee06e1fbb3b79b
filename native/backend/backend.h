// The backend contract: what a model needs from the machine it runs on. Model code (native/model/)
// is written once as templates over a backend class Bk and reaches memory and compute only through
// it; native/cpu/backend.h (the reference) and native/cuda/backend.h implement it, and each
// backend's models.cpp instantiates the families for its element types.
//
// Why a template over the backend and not a table of function pointers: the element types differ
// per backend and per op argument (activations T, gradients/statistics G, the attention's saved
// state), and the CPU backend runs in double precision for the finite-difference checks. As
// template parameters they are checked by the compiler at every call (a G* passed where a T* is
// wanted does not compile), ops cost nothing to dispatch, and a missing op in a backend is a
// compile error rather than a runtime surprise. What a backend cannot do it says through
// supports(Op), which model construction checks before anything is allocated.
//
// A backend class provides (see CpuBackend for the reference implementation of each):
//
//   types      T      storage of frozen weights and activations (cpu: float|double|bf16; cuda: float|bf16)
//              G      trainable master weights, gradients, optimizer moments, per-row statistics,
//                     rotary tables (float for bf16; cpu float|double: = T)
//              Saved  element of what attention keeps for its backward: each row's logsumexp
//                     [B, nh, Tq] (in G) — opaque to models, sized by
//                     attention_saved_elems()
//              Nf4    a quantized weight matrix (QLoRA), or a placeholder when unsupported
//   memory     alloc(kind, bytes) -> device pointer, release(ptr), upload/download
//              (host <-> device bytes), copy (device -> device), zero, sync, free_bytes()
//   elements   upload_elems / download_f64 / download_f32: host values converted to and from T or G
//   ops        one member function per op family, forward and backward side by side (list below);
//              pointers are device pointers; backward ops ADD (+=) into gradient outputs; a null
//              gradient pointer means "not needed"
//
// Ops (forward / backward), and where each backend implements them:
//   linear (gemm + bias)     linear_forward / linear_backward, add_bias, bias_backward, gemm
//   inference weights        pack_for_inference (a frozen W [N, K] into the backend's GEMM layout
//                            in place; false: it stays row-major), unpack_for_inference (all of
//                            them back, bit for bit), packed_for_inference (how many); linear_forward
//                            reads a packed W, nothing else may (CPU fp32 packs; CUDA: no-ops)
//   NF4 linear (QLoRA)       nf4_quantize, nf4_bytes(_for), nf4_workspace_bytes, nf4_decode_rows,
//                            linear_forward_nf4 / linear_backward_nf4
//   RMSNorm, LayerNorm       rmsnorm_forward / _backward, layernorm_forward / _backward
//   NormHead row norm        l2norm_rows_forward / _backward
//   rotary embeddings        rope_forward / rope_backward
//   causal GQA attention     attention_forward / attention_backward
//   causal ALiBi attention   alibi_attention_forward / alibi_attention_backward
//   SwiGLU, GELU (tanh)      swiglu_forward / _backward, gelu_forward / _backward
//   token embedding          embedding_forward / embedding_backward
//   cross-entropy (fused)    cross_entropy_rows (per-row losses; the gradient overwrites the logits),
//                            loss_total (their sum in row order, and the count)
//   LoRA dropout             dropout_forward / dropout_backward_add (masks from core/random.h)
//   data movement            copy_2d, add_into, add_rows_into, cast, fill_normal
//   optimizer                sum_squares (of one tensor or a list), adamw_update (+ adamw_update_copy),
//                            adamw_update_8bit
#pragma once
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <utility>

namespace sft {

// What the memory plan allocates, one block each (llm.c's layout: zeroing all gradients is one
// call, the optimizer one pass, all-reduce later one call on the gradient block).
enum class MemKind {
  Weights,      // frozen base weights (and what is derived from them: NormHead's normalised rows)
  Trainable,    // what the optimizer updates when it is not a base weight: LoRA, prompt embeddings,
                // and fp32 master copies where compute runs in bf16
  Grads,        // one flat buffer: every trainable tensor's gradient, in parameter order
  Optimizer,    // AdamW moments (32-bit, or 8-bit blockwise codes + scales)
  Activations,  // what forward saves for backward, sized for the planned batch x sequence
  Workspace,    // temporaries of one step (backward's scratch, ids and targets, rotary tables)
  KvCache,      // generation: keys and values per sequence slot
  Count
};

// What alloc() zero-fills: state that starts at zero (gradients, moments, weights not loaded yet).
// Activations, workspace and the KV cache are written before they are read; left as they come
// (the CUDA emulator fills them with NaN), a read of something never written shows.
inline bool zero_filled(MemKind k) {
  return k == MemKind::Weights || k == MemKind::Trainable || k == MemKind::Grads || k == MemKind::Optimizer;
}

inline const char* mem_kind_name(MemKind k) {
  switch (k) {
    case MemKind::Weights: return "weights";
    case MemKind::Trainable: return "trainable";
    case MemKind::Grads: return "gradients";
    case MemKind::Optimizer: return "optimizer";
    case MemKind::Activations: return "activations";
    case MemKind::Workspace: return "workspace";
    case MemKind::KvCache: return "kv_cache";
    case MemKind::Count: break;
  }
  return "?";
}

// Op families a model may need; supports() answers per backend and element type.
enum class Op {
  Linear, Gemm, Nf4Linear, RmsNorm, LayerNorm, L2NormRows, Rope, Attention, AlibiAttention, SwiGLU, Gelu,
  Embedding, CrossEntropy, Dropout, DataMovement, AdamW, AdamW8bit,
};

inline const char* op_name(Op op) {
  switch (op) {
    case Op::Linear: return "linear";
    case Op::Gemm: return "gemm";
    case Op::Nf4Linear: return "NF4 linear (QLoRA)";
    case Op::RmsNorm: return "RMSNorm";
    case Op::LayerNorm: return "LayerNorm";
    case Op::L2NormRows: return "NormHead row normalisation";
    case Op::Rope: return "rotary embeddings";
    case Op::Attention: return "causal attention";
    case Op::AlibiAttention: return "ALiBi attention";
    case Op::SwiGLU: return "SwiGLU";
    case Op::Gelu: return "GELU";
    case Op::Embedding: return "embedding";
    case Op::CrossEntropy: return "cross-entropy";
    case Op::Dropout: return "LoRA dropout";
    case Op::DataMovement: return "copies";
    case Op::AdamW: return "AdamW";
    case Op::AdamW8bit: return "8-bit AdamW";
  }
  return "?";
}

// Where a model runs and in which precision.
enum class Device { Cpu, Cuda };
enum class Compute { F32, F64, BF16 };

inline const char* device_name(Device d) { return d == Device::Cpu ? "cpu" : "cuda"; }
inline const char* compute_name(Compute c) { return c == Compute::F32 ? "f32" : c == Compute::F64 ? "f64" : "bf16"; }

// Thrown when a backend runs out of memory: the addon turns it into a message naming the plan's
// largest kind and what to lower.
struct OutOfMemory : std::exception {
  std::string msg;
  MemKind kind;
  size_t bytes;
  OutOfMemory(MemKind k, size_t b, std::string m) : msg(std::move(m)), kind(k), bytes(b) {}
  const char* what() const noexcept override { return msg.c_str(); }
};

}  // namespace sft
