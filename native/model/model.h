// What every model implements, whatever its family and backend, and how the addon and tests
// create one. A family (model/llama.h, model/bloom.h) is a class template over the backend deriving
// the shared decoder skeleton (model/decoder.h); each backend's models.cpp instantiates it.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "backend/plan.h"
#include "core/dtype.h"

namespace sft {


enum class Arch { Llama, Baichuan, Baichuan2, Qwen2, Bloom };
Arch parse_arch(const std::string& s);

struct ModelConfig {
  Arch arch = Arch::Llama;
  int64_t vocab = 0, hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0;
  double rope_theta = 10000.0;
  double norm_eps = 1e-6;  // RMSNorm eps (Llama family) or LayerNorm eps (Bloom)
  bool tie_embeddings = false, qkv_bias = false, norm_head = false;
  int64_t head_dim() const { return hidden / heads; }
  int64_t qkv_dim() const { return (heads + 2 * kv_heads) * head_dim(); }
  void validate() const;  // throws with a message naming the bad field
};

struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
};

struct LoraOptions {
  std::vector<std::string> targets;
  int64_t rank = 8;
  double alpha = 16, dropout = 0;
  uint64_t seed = 0;
  bool use_rslora = false;
};

// One tensor's AdamW moments: 32-bit (m, v) or 8-bit blockwise (codes + per-block absmax); the
// other pair is empty. All empty before the first step.
struct Moments {
  std::vector<float> m, v;
  std::vector<uint8_t> m8, v8;
  std::vector<float> m_absmax, v_absmax;
};

struct AdamWOptions {
  double lr = 1e-4, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0, max_grad_norm = 1.0;
  // fp16 loss scaling (torch.amp.GradScaler's unscale_): the gradients hold loss_scale x the true
  // ones; they are multiplied by this (1 / loss_scale) before the norm, the clipping and the update.
  double inv_scale = 1.0;
  // 8-bit blockwise states (adamw_8bit) for tensors of at least min_8bit_size elements, as
  // bitsandbytes does; smaller tensors keep 32-bit states.
  bool eight_bit = false;
  int64_t min_8bit_size = 4096;
  // Paged AdamW (paged_adamw_32bit / _8bit): on a GPU the moments live in pinned host memory and
  // page through the device in chunks (the update is the same); on the CPU nothing changes.
  bool paged = false;
};

// A run's memory plan request: activations for `batch` x `seq` tokens (training: what backward
// needs), a KV cache of `kv_slots` sequences of `kv_positions`, and the optimizer's state.
struct PlanRequest {
  int64_t batch = 0, seq = 0;
  bool train = false;
  int64_t kv_slots = 0, kv_positions = 0;
  bool optimizer = false;  // lay out the AdamW state now (training)
  bool eight_bit = false;  // ... as 8-bit blockwise moments for tensors of >= min_8bit_size elements
  int64_t min_8bit_size = 4096;
  bool paged = false;      // ... in pinned host memory, paged to the device (AdamWOptions::paged)
};

// How often each kind was (re)allocated: a training loop that stays within its plan adds nothing.
struct MemoryStats {
  std::array<int64_t, size_t(MemKind::Count)> allocations{};
};

// What the addon and tests use, whatever the backend. Data crosses as float (or double for tests).
class ModelBase {
 public:
  virtual ~ModelBase() = default;
  virtual const ModelConfig& config() const = 0;
  virtual Device device() const = 0;
  virtual Compute compute() const = 0;
  // Fix the memory of a run (see PlanRequest); calls that stay within it allocate nothing.
  virtual void plan(const PlanRequest& r) = 0;
  // Bytes per kind, with every buffer by name: what is allocated (or, for a meta model, would be).
  virtual MemoryPlan memory_plan() const = 0;
  virtual MemoryStats memory_stats() const = 0;
  // Checkpoint tensors the model expects (HF names and shapes).
  virtual std::vector<ParamInfo> base_params() const = 0;
  // Copy one checkpoint tensor (raw little-endian bytes of dtype) into the model.
  virtual void load_tensor(const std::string& name, const void* data, DType dtype,
                           const std::vector<int64_t>& shape) = 0;
  // Random base weights made where they live (benchmarks, tests): N(0, 1/fan_in) for matrices,
  // norm weights 1, biases 0; the same values on every backend for one seed (up to T's rounding).
  virtual void randomize(uint64_t seed) = 0;
  // Names listed by base_params() that were never loaded.
  virtual std::vector<std::string> missing_tensors() const = 0;
  virtual std::vector<ParamInfo> add_lora(const LoraOptions& opts) = 0;
  // Prompt tuning (PEFT PROMPT_TUNING): n trainable virtual-token embeddings [n, hidden] prepended to
  // every sequence (positions 0..n-1, never in the loss). init: n*hidden values, or null for N(0, 1)
  // from seed (nn.Embedding's default). Base weights stay frozen. Returns the new tensor.
  virtual ParamInfo add_prompt_tuning(int64_t n, const float* init, uint64_t seed) = 0;
  // Gradient checkpointing: training keeps only each layer's input and recomputes the layer inside
  // backward (same results, activation memory of one layer instead of all).
  virtual void set_gradient_checkpointing(bool on) = 0;
  // Fold every LoRA adapter into its base weight (W += scale * B A) and drop the adapters.
  virtual void merge_lora() = 0;
  // QLoRA: replace every frozen linear weight (not embeddings, norms or lm_head) by NF4 with
  // double quantization, one NF4 tensor per checkpoint tensor. Returns bytes before / after.
  virtual std::pair<int64_t, int64_t> quantize_nf4(bool double_quant) = 0;
  // Make every base weight trainable (full fine-tuning, gradient checks) or freeze them.
  virtual void set_base_trainable(bool trainable) = 0;
  virtual std::vector<ParamInfo> trainable_params() const = 0;
  virtual std::vector<double> get_tensor(const std::string& name) const = 0;
  virtual std::vector<double> get_grad(const std::string& name) const = 0;
  virtual void set_tensor(const std::string& name, const double* data, int64_t n) = 0;
  // Loss sum over label tokens (labels < 0 ignored); with grad, adds d(scale * loss)/dparam.
  virtual double forward_backward(const int32_t* ids, const int32_t* labels, int64_t B, int64_t T,
                                  double scale, int64_t step, int64_t* count) = 0;
  // Same loss without gradients. training = true applies the same dropout masks as
  // forward_backward with the same step (what finite differences need).
  virtual double forward_loss(const int32_t* ids, const int32_t* labels, int64_t B, int64_t T,
                              int64_t step, bool training, int64_t* count) = 0;
  virtual void zero_grad() = 0;
  // Data parallel: the next batches' first row is row `rows` of the step's global batch, so LoRA
  // dropout draws the masks the one-rank run draws for those rows (0 without data parallelism).
  virtual void set_dropout_row_offset(int64_t rows) = 0;
  // The flat gradient block (all trainable gradients, parameter order, padding zeroed), which a
  // communicator all-reduces in place; `device`: the pointer is GPU memory.
  struct GradBlock {
    void* data = nullptr;
    int64_t count = 0;
    bool f64 = false, device = false;
  };
  virtual GradBlock grad_block() = 0;
  virtual double grad_norm() const = 0;
  // AdamW state for checkpoints: the step count and each trainable tensor's first/second moments
  // (empty before the first step). Restoring them makes a resumed run continue bit for bit.
  virtual int64_t optimizer_step() const = 0;
  virtual Moments get_moments(const std::string& name) const = 0;
  virtual void set_moments(int64_t step, const std::string& name, const Moments& m) = 0;
  // Clip to max_grad_norm, then one AdamW step; returns the norm before clipping.
  virtual double adamw_step(const AdamWOptions& opts) = 0;
  // ZeRO stage 1 (model/zero_shard.h): this process is rank `rank` of `size` data-parallel ranks
  // and keeps the AdamW state of its slice of the trainable elements only. adamw_step then updates
  // that slice (the norm is still the whole, all-reduced gradient's), stages every rank's new values
  // in the flat gradient block and calls `gather` (an all-gather over that block, its parts at
  // `offsets`, size + 1 element offsets), after which every rank holds all the new values. The
  // gradients are spent by then: the block holds values, not gradients, until the next zero_grad.
  // Set before the first step or restore; size 1 is the unsharded optimizer.
  using ParamGather = std::function<void(const GradBlock& staging, const int64_t* offsets)>;
  virtual void shard_optimizer(int rank, int size, ParamGather gather) = 0;
  virtual int optimizer_shards() const = 0;
  // Each rank's part of a trainable tensor's state, as size + 1 element offsets into the tensor
  // (parts are contiguous and in rank order; 8-bit scales: the blocks from offsets[r] / 256 up).
  // get_moments fills this rank's part only (zeros elsewhere); set_moments takes this rank's part.
  virtual std::vector<int64_t> optimizer_shard(const std::string& name) const = 0;
  // Whether every value the optimizer updates (fp32 masters where compute is bf16) is finite: a
  // finite gradient can still make them NaN (adam_epsilon 0 over a zero gradient is 0/0).
  virtual bool trainable_finite() const = 0;
  // Logits [B*T, vocab] for every position (no cache).
  virtual std::vector<float> logits(const int32_t* ids, int64_t B, int64_t T) = 0;
  // The KV cache holds sequences in slots (0, 1, ...; chat and score use slot 0), each with its own
  // length. feed: append n tokens to one slot, return the logits of the last one.
  virtual std::vector<float> feed(const int32_t* ids, int64_t n, int64_t slot = 0) = 0;
  // One token for each of B sequences in distinct slots, each already holding its prompt (continuous
  // batching's decode step): their logits [B, vocab] from one forward, each row equal bit for bit to
  // what feed() of that token alone would return (the engine's per-row arithmetic does not depend on
  // the rows beside it; up to kDecodeBatchMax rows).
  virtual std::vector<float> decode(const int32_t* slots, const int32_t* ids, int64_t B) = 0;
  virtual void reset_cache(int64_t slot = 0) = 0;
  // Keep only the first n cached tokens of a slot (a shared prompt prefix is fed once, then reused).
  virtual void truncate_cache(int64_t n, int64_t slot = 0) = 0;
  virtual int64_t cache_length(int64_t slot = 0) const = 0;
  // Inference only (chat, score, eval, serve: nothing trains): every frozen linear weight (and an
  // untied lm_head) goes into the backend's GEMM layout in place (CPU fp32: the GEMM's panels,
  // packed once instead of by every prefill and scoring GEMM; decode reads them through the panel
  // GEMV). Results: products of more than 8 rows (scoring, eval, prefill) bit for bit as before;
  // those of up to 8 rows (decode, feed()'s lm_head of its last row, texts of <= 8 tokens) within
  // rounding: the panel GEMV sums as the blocked GEMM does, kc blocks in k order, where the
  // row-major GEMV summed otherwise (a decode row's linear products now have the bits prefill gives
  // that row), and each row's bits stay independent of the rows beside it (continuous
  // batching). Whatever reads or writes base weights (get_tensor, set_tensor, load_tensor,
  // randomize, merge_lora, quantize_nf4) unpacks them first,
  // bit for bit, and the next inference forward packs them again; training (forward_backward,
  // forward_loss in training mode, set_base_trainable) unpacks and ends inference mode. Returns
  // how many matrices are packed (0 where the backend keeps none: CUDA, bf16, f64).
  virtual int64_t prepare_inference() = 0;
  virtual int64_t packed_weights() const = 0;
  // lm_head and the loss run over chunks of this many rows (tokens), never the whole batch's
  // logits; 0 (the default) lets the memory plan choose (<= 128 MiB of logits, <= 1024 rows).
  // Tests force tiny chunks to compare them with one whole chunk.
  virtual void set_head_chunk_rows(int64_t rows) = 0;
};

// The most sequences one decode() step takes: the CPU's GEMV path, whose rows do not depend on each
// other, takes up to 8 rows (cpu/kernels.h kGemvMaxM); more would switch to the packed GEMM.
constexpr int64_t kDecodeBatchMax = 8;

// Where and how a model is built. meta: sizes only, no memory is ever taken (planning a run).
struct ModelOptions {
  Device device = Device::Cpu;
  Compute compute = Compute::F32;
  bool meta = false;
};

// The family's model for cfg.arch on the backend of opts.device (backend/registry.cpp).
std::unique_ptr<ModelBase> make_model(const ModelConfig& cfg, const ModelOptions& opts);
// On the CPU; f64 = double precision (gradient checks).
std::unique_ptr<ModelBase> make_model(const ModelConfig& cfg, bool f64);

}  // namespace sft
