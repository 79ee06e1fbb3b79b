// The forward skeleton every decoder family shares (Llama family, Bloom), written once over the
// backend: token embedding (with prompt tuning's virtual tokens), the layers (with gradient
// checkpointing), the final norm, lm_head and the fused loss; backward mirrors it in reverse. A
// family (CRTP parameter Arch, with its per-layer buffers LayerActs) supplies only its architecture:
//
//   lay_out_layer / lay_out_top / lay_out_scratch   its buffers (the memory plan's size tables)
//   embed_forward    / embed_backward               embedding (+ Bloom's embedding LayerNorm)
//   layer_forward    / layer_backward               one decoder layer
//   final_forward    / final_backward               the final norm
//   head_weights     / head_grad_begin, _end        lm_head (tied, NormHead)
//   kv_width, workspace_ready, linears
//
// Memory: the activations and workspace are planned for a capacity (batch x sequence, training or
// not) and allocated once; a call that fits reuses them, so the training loop allocates nothing.
// plan() fixes the capacity for a run; a training batch beyond it is an error, an inference call
// beyond it grows the plan.
//
// lm_head and the loss never hold the logits of the whole batch ([B*T, V]: 4.6 GiB fp32 for
// Qwen2's 151,936 words at 8 x 1024 tokens): head_loss runs them over chunks of rows (tokens) in
// one reused buffer, as Liger-kernel's fused linear cross-entropy does (see head_loss).
#pragma once
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/kv_cache.h"
#include "model/optimizer.h"

namespace sft::model {

// Which of a layer's buffers a layout holds: all of them with what backward needs (training),
// only its input (gradient checkpointing recomputes the rest), or what a forward pass uses.
enum class LayerPart { Train, Input, Eval };

template <class Bk, class Arch, class LayerActs>
class Decoder : public OptimizerStore<Bk> {
 public:
  using T = typename Bk::T;
  using G = typename Bk::G;
  using Saved = typename Bk::Saved;
  using OptimizerStore<Bk>::OptimizerStore;

  // ---- entry points ----------------------------------------------------------------------------

  double forward_backward(const int32_t* ids, const int32_t* labels, int64_t B, int64_t Tu, double scale, int64_t step,
                          int64_t* count) override {
    this->check_ids(ids, B * Tu, this->config().vocab);
    this->end_inference();  // backward reads W by its rows
    forward(ids, B, Tu, Mode::Train, step);
    upload_targets(labels, B, Tu);
    const double loss = head_loss(scale, true, count);
    backward();
    return loss;
  }

  double forward_loss(const int32_t* ids, const int32_t* labels, int64_t B, int64_t Tu, int64_t step, bool training,
                      int64_t* count) override {
    this->check_ids(ids, B * Tu, this->config().vocab);
    if (training) this->end_inference();  // the same products as forward_backward's
    forward(ids, B, Tu, training ? Mode::Train : Mode::Eval, step);
    upload_targets(labels, B, Tu);
    return head_loss(1.0, false, count);
  }

  std::vector<float> logits(const int32_t* ids, int64_t B, int64_t Tu) override {
    this->check_ids(ids, B * Tu, this->config().vocab);
    forward(ids, B, Tu, Mode::Eval, 0);
    const int64_t V = this->config().vocab, T_ = last_.T, nv = last_.nv;
    std::vector<float> out(size_t(B * Tu * V));  // the real positions only (virtual ones dropped)
    for (int64_t b = 0; b < B; b++) head_rows_to_host(out.data() + b * Tu * V, b * T_ + nv, Tu);
    return out;
  }

  std::vector<float> feed(const int32_t* ids, int64_t n, int64_t slot) override {
    if (n <= 0) throw std::runtime_error("feed: no tokens");
    check_slot(slot);
    this->check_ids(ids, n, this->config().vocab);
    spans_.assign(1, CachedSpan{slot, cache_length(slot), 0, 0});  // rows: set by forward (virtual tokens)
    forward(ids, 1, n, Mode::Cached, 0);
    return cached_logits(1);
  }

  std::vector<float> decode(const int32_t* slots, const int32_t* ids, int64_t B) override {
    if (B <= 0 || B > kDecodeBatchMax)
      throw std::runtime_error("decode: " + std::to_string(B) + " sequences; one step takes 1.." + std::to_string(kDecodeBatchMax));
    this->check_ids(ids, B, this->config().vocab);
    spans_.clear();
    for (int64_t b = 0; b < B; b++) {
      check_slot(slots[b]);
      for (int64_t c = 0; c < b; c++)
        if (slots[c] == slots[b]) throw std::runtime_error("decode: slot " + std::to_string(slots[b]) + " appears twice");
      if (cache_length(slots[b]) == 0) throw std::runtime_error("decode: slot " + std::to_string(slots[b]) + " holds no prompt; feed() it first");
      spans_.push_back(CachedSpan{slots[b], cache_length(slots[b]), b, 1});
    }
    forward(ids, B, 1, Mode::Cached, 0);
    return cached_logits(B);
  }

  // lm_head over the last `rows` rows of the last cached forward (feed: its last position; decode: one row
  // per sequence).
  std::vector<float> cached_logits(int64_t rows) {
    std::vector<float> out(size_t(rows * this->config().vocab));
    head_rows_to_host(out.data(), last_.B * last_.T - rows, rows);
    return out;
  }

  // Logits of final-norm rows [row0, row0 + rows) into host `out`, a chunk of head_rows_ at a time
  // through the logits buffer (scoring and generation; training's head_loss keeps them on the device).
  void head_rows_to_host(float* out, int64_t row0, int64_t rows) {
    const int64_t H = this->config().hidden, V = this->config().vocab;
    for (int64_t r0 = 0; r0 < rows; r0 += head_rows_) {
      const int64_t n = std::min(head_rows_, rows - r0);
      this->bk_.linear_forward(top_.logits, top_.lnf + (row0 + r0) * H, arch().head_weights(), nullptr, n, H, V, false);
      this->bk_.download_values(out + r0 * V, top_.logits, n * V);
    }
  }

  void reset_cache(int64_t slot) override {
    check_slot(slot);
    if (size_t(slot) < kv_.len.size()) kv_.len[size_t(slot)] = 0;
  }
  void truncate_cache(int64_t n, int64_t slot) override {
    check_slot(slot);
    if (n < 0 || n > cache_length(slot))
      throw std::runtime_error("truncateCache(" + std::to_string(n) + "): slot " + std::to_string(slot) + " holds " +
                               std::to_string(cache_length(slot)) + " tokens");
    if (size_t(slot) < kv_.len.size()) kv_.len[size_t(slot)] = n;  // positions >= n are overwritten by the next feed
  }
  int64_t cache_length(int64_t slot) const override {
    return slot >= 0 && size_t(slot) < kv_.len.size() ? kv_.len[size_t(slot)] : 0;
  }

  void set_dropout_row_offset(int64_t rows) override { dropout_row0_ = rows; }

  int64_t prepare_inference() override {
    this->inference_ = true;
    pack_for_inference();
    return this->packed_weights();
  }

  void set_head_chunk_rows(int64_t rows) override {
    if (rows < 0) throw std::runtime_error("set_head_chunk_rows: negative row count");
    head_rows_forced_ = rows;
    if (cap_.B) apply_cap(cap_);
  }

  void set_gradient_checkpointing(bool on) override {
    if (on == checkpointing_) return;
    checkpointing_ = on;
    if (cap_.B) apply_cap(cap_);  // the layout of the saved activations changes
  }

  // Prompt tuning (PEFT PROMPT_TUNING): virtual-token embeddings [n, hidden], an adapter tensor
  // prepended to every sequence; their gradient is the sum of their rows of dx over the batch.
  ParamInfo add_prompt_tuning(int64_t n, const float* init, uint64_t seed) override {
    if (prompt_) throw std::runtime_error("prompt tuning is already attached");
    if (n <= 0) throw std::runtime_error("num_virtual_tokens must be > 0");
    const int64_t H = this->config().hidden;
    prompt_ = this->add_param("prompt_embeddings", {n, H}, false);
    prompt_->trainable = true;
    prompt_->adapter = true;
    this->materialize();
    this->relayout_trainable();
    if (!this->meta_) {
      std::vector<double> v(size_t(n * H));
      if (init) {
        for (size_t i = 0; i < v.size(); i++) v[i] = init[i];
      } else {  // N(0, 1) (nn.Embedding's default) by Box-Muller on the counter-based generator
        const uint64_t stream = fnv1a(prompt_->name);
        for (int64_t i = 0; i < n * H; i++) {
          const double u1 = std::max(rng::uniform01(seed, stream, uint64_t(2 * i)), 1e-300);
          const double u2 = rng::uniform01(seed, stream, uint64_t(2 * i + 1));
          v[size_t(i)] = std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2);
        }
      }
      this->bk_.upload_values(prompt_->w, v.data(), n * H);
      if (prompt_->master) this->bk_.upload_values(prompt_->master, v.data(), n * H);
    }
    return {prompt_->name, prompt_->shape};
  }

  // Fix the run's memory: activations and workspace for `batch` x `seq` (training or not), the KV
  // cache, and the optimizer's state. Nothing later in a run that stays within it allocates.
  void plan(const PlanRequest& r) override {
    if (r.batch < 0 || r.seq < 0 || r.kv_slots < 0 || r.kv_positions < 0) throw std::runtime_error("plan: negative size");
    this->materialize();
    const int64_t nv = prompt_ ? prompt_->shape[0] : 0;
    if (r.batch > 0 && r.seq > 0) {
      const int64_t T_ = r.seq + nv;
      apply_cap({r.batch, T_, std::max({T_, kv_.capacity, r.kv_positions + nv}), r.train});
      locked_ = r.train;
    }
    if (r.kv_slots > 0 && r.kv_positions > 0) {
      grow_kv(r.kv_slots, r.kv_positions + nv);
      if (cap_.positions < kv_.capacity) apply_cap({std::max<int64_t>(cap_.B, 1), std::max<int64_t>(cap_.T, 1), kv_.capacity, cap_.train});
    }
    if (r.train && r.optimizer) this->lay_out_optimizer(r.eight_bit, r.min_8bit_size, r.paged);
  }

 protected:
  struct Cap {
    int64_t B = 0, T = 0, positions = 0;
    bool train = false;
  };

  // Buffers the skeleton itself owns (the family's are in its LayerActs and top/scratch members).
  struct Top {
    T* x = nullptr;          // the residual stream [N, H] (workspace)
    T* x_out = nullptr;      // the last layer's output, the final norm's input
    T* lnf = nullptr;        // the final norm's output
    T* logits = nullptr;     // one chunk of lm_head's rows [head_rows_, V]; dlogits after the loss
    double* row_loss = nullptr;  // the loss of each row [N] (head_loss sums them at the end)
    int32_t* ids = nullptr;  // the batch's token ids
    int32_t* targets = nullptr;
    T* dx = nullptr;         // backward: gradient of the residual stream
    T* dlnf = nullptr;       // backward: gradient of the final norm's output
    T* xr = nullptr;         // checkpointing: a layer's input, recomputed from
  };

  Arch& arch() { return static_cast<Arch&>(*this); }

  // Adapters' activations, trainable heads and prompt positions are part of the plan.
  void trainable_changed() override {
    if (cap_.B) apply_cap(cap_);
  }

  // Virtual positions at the start of each row for this forward: all of them, except in cached
  // generation after the first feed (they are in the cache already).
  int64_t virtual_tokens(Mode mode) const {
    return prompt_ && (mode != Mode::Cached || spans_[0].p0 == 0) ? prompt_->shape[0] : 0;
  }

  void check_slot(int64_t slot) const {
    // A slot holds a whole sequence's positions: more slots than sequences served at once waste memory.
    if (slot < 0 || slot >= 64) throw std::runtime_error("KV cache slot " + std::to_string(slot) + " is out of range 0..63");
  }

  // The layer's buffers for this pass: its own when training saves them, else the working layer.
  LayerActs& acts_for(int64_t l, Mode mode) {
    return mode == Mode::Train && !checkpointing_ ? layers_[size_t(l)] : work_;
  }

  void forward(const int32_t* ids, int64_t B, int64_t Tu, Mode mode, int64_t step) {
    const ModelConfig& c = this->config();
    const int64_t nv = virtual_tokens(mode);
    const int64_t T_ = Tu + nv;  // internal sequence length
    const int64_t N = B * T_, H = c.hidden;
    // Cached: spans_ says which rows go to which slot at which position (feed: one span of T_ rows;
    // decode: B spans of one row). The families read it in their layer_forward.
    int64_t slots = 0, end = T_;
    if (mode == Mode::Cached) {
      if (spans_.size() == 1) spans_[0].rows = T_;
      for (const CachedSpan& s : spans_) slots = std::max(slots, s.slot + 1), end = std::max(end, s.p0 + s.rows);
      grow_kv(slots, end);
    }
    ensure_capacity(B, T_, mode == Mode::Train, end);
    if (mode != Mode::Train && this->inference_ && !this->packed_) pack_for_inference();  // unpacked since
    Bk& bk = this->bk_;
    bk.upload(top_.ids, ids, size_t(B * Tu) * sizeof(int32_t));

    arch().embed_forward(top_.x, top_.ids, B, Tu, nv);
    this->lora_ws_.mask_row0 = dropout_row0_ * T_;
    for (int64_t l = 0; l < c.layers; l++) {
      // With checkpointing only the layer's input is kept; backward recomputes the rest.
      if (mode == Mode::Train && checkpointing_) bk.copy(layers_[size_t(l)].x_in, top_.x, size_t(N * H) * sizeof(T));
      arch().layer_forward(l, top_.x, acts_for(l, mode), B, T_, mode, step);
    }
    bk.copy(top_.x_out, top_.x, size_t(N * H) * sizeof(T));
    arch().final_forward(top_.lnf, top_.x_out, N);
    // lm_head runs where its logits are used, a chunk of rows at a time: cached_logits (generation:
    // the last position, or one row per sequence), head_loss (training, evaluation), logits() (scoring).
    if (mode == Mode::Cached)
      for (const CachedSpan& s : spans_) kv_.len[size_t(s.slot)] = s.p0 + s.rows;
    last_ = {B, T_, nv, step};
  }

  // lm_head + cross-entropy over the last forward's rows, head_rows_ rows (tokens) at a time: each
  // chunk's logits = lnf W^T go into the one chunk buffer, the loss turns them into its gradient
  // scale * (softmax - onehot) in place, and with grad that goes at once into dlnf (= dlogits W,
  // the input of backward) and lm_head's gradient (+= dlogits^T lnf, when it is trainable) before
  // the next chunk reuses the buffer. Per-row losses are summed once at the end, in row order, so
  // the loss does not depend on the chunking; gradients only by the order dW's chunks are added.
  // Chunks of rows rather than of the vocabulary (the online-logsumexp alternative): a row's
  // softmax needs its whole row, so vocabulary slices would need every slice's logits twice (once
  // for the logsumexp, once for the gradient) or a rescaled second GEMM; row chunks keep the fused
  // kernel as it is, one pass, and GEMMs as wide as the vocabulary. A chunk whose rows are all
  // ignored (prompt, padding: -100) contributes nothing and is skipped.
  double head_loss(double scale, bool grad, int64_t* count) {
    const ModelConfig& c = this->config();
    const int64_t N = last_.B * last_.T, H = c.hidden, V = c.vocab;
    Bk& bk = this->bk_;
    const T* W = arch().head_weights();
    G* dW = nullptr;
    if (grad) {
      bk.zero(top_.dlnf, size_t(N * H) * sizeof(T));
      dW = arch().head_grad_begin();
    }
    for (int64_t r0 = 0; r0 < N; r0 += head_rows_) {
      const int64_t n = std::min(head_rows_, N - r0);
      if (std::all_of(targets_.begin() + r0, targets_.begin() + r0 + n, [](int32_t t) { return t < 0; })) {
        bk.zero(top_.row_loss + r0, size_t(n) * sizeof(double));
        continue;
      }
      bk.linear_forward(top_.logits, top_.lnf + r0 * H, W, nullptr, n, H, V, false);
      bk.cross_entropy_rows(top_.logits, top_.targets + r0, n, V, scale, grad, top_.row_loss + r0);
      if (grad) bk.linear_backward(top_.dlnf + r0 * H, dW, nullptr, top_.logits, top_.lnf + r0 * H, W, n, H, V);
    }
    if (grad) arch().head_grad_end();
    return bk.loss_total(top_.row_loss, top_.targets, N, count);
  }

  // After head_loss: top_.dlnf holds the gradient of the final norm's output.
  void backward() {
    const ModelConfig& c = this->config();
    const int64_t B = last_.B, T_ = last_.T, N = B * T_, H = c.hidden;
    Bk& bk = this->bk_;
    bk.zero(top_.dx, size_t(N * H) * sizeof(T));
    arch().final_backward(top_.dx, top_.dlnf, top_.x_out, N);
    for (int64_t l = c.layers - 1; l >= 0; l--) {
      LayerActs& L = acts_for(l, Mode::Train);
      if (checkpointing_) {  // recompute this layer's activations from its saved input (same dropout masks)
        bk.copy(top_.xr, layers_[size_t(l)].x_in, size_t(N * H) * sizeof(T));
        arch().layer_forward(l, top_.xr, L, B, T_, Mode::Train, last_.step);
      }
      arch().layer_backward(l, top_.dx, L, B, T_, last_.step);
    }
    arch().embed_backward(top_.dx, top_.ids, B, T_ - last_.nv, last_.nv);
  }

  // The frozen linear weights, and lm_head where the family has one of its own (inference_head:
  // not the tied embedding, whose rows embedding_forward reads, nor NormHead's raw rows), into the
  // backend's inference layout. Trainable and NF4 weights stay as they are.
  void pack_for_inference() {
    if (this->meta_ || this->packed_) return;
    this->materialize();
    for (Linear<Bk>* lin : arch().linears()) {
      Param<Bk>* p = lin->W;
      if (!p->q && p->w && !p->trainable) this->bk_.pack_for_inference(p->w, lin->out, lin->in);
    }
    if (Param<Bk>* h = arch().inference_head(); h && h->w && !h->trainable)
      this->bk_.pack_for_inference(h->w, this->config().vocab, this->config().hidden);
    this->packed_ = true;
  }

  // Embedding rows for B sequences: the virtual tokens (when nv > 0), then table[ids].
  void embed_rows(T* x, const int32_t* ids, const T* table, int64_t B, int64_t Tu, int64_t nv, int64_t H) {
    for (int64_t b = 0; b < B; b++) {
      if (nv) this->bk_.copy(x + b * (Tu + nv) * H, prompt_->w, size_t(nv * H) * sizeof(T));
      this->bk_.embedding_forward(x + (b * (Tu + nv) + nv) * H, ids + b * Tu, table, Tu, H);
    }
  }

  // Mirror of embed_rows: the table (when trainable) gets the real rows, the virtual tokens the sum
  // over the batch.
  void embed_rows_backward(Param<Bk>* table, const T* dx, const int32_t* ids, int64_t B, int64_t Tu, int64_t nv, int64_t H) {
    if (table->trainable)
      for (int64_t b = 0; b < B; b++) this->bk_.embedding_backward(table->g, dx + (b * (Tu + nv) + nv) * H, ids + b * Tu, Tu, H);
    if (nv) this->bk_.add_rows_into(prompt_->g, dx, B, nv * H, (Tu + nv) * H);
  }

  // Whether a pass of B x T_ tokens fits capacity k: training needs the saved buffers of that
  // shape (attention's grow with B T^2), a forward pass only as many rows.
  static bool fits(const Cap& k, int64_t B, int64_t T_, bool train, int64_t positions) {
    const bool rows = B * T_ <= k.B * k.T;
    const bool saved = !train || (k.train && B * T_ * T_ <= k.B * k.T * k.T);
    return rows && saved && positions <= k.positions;
  }

  void ensure_capacity(int64_t B, int64_t T_, bool train, int64_t positions) {
    if (fits(cap_, B, T_, train, positions)) return;
    if (locked_ && train && !fits(cap_, B, T_, true, cap_.positions))
      throw std::runtime_error("a training batch of " + std::to_string(B) + " x " + std::to_string(T_) +
                               " tokens exceeds this run's memory plan (" + std::to_string(cap_.B) + " x " +
                               std::to_string(cap_.T) + "): plan for the largest batch and max_seq_length");
    // Positions grow with the KV cache (geometrically), so decoding does not replan every token.
    const int64_t pos = std::max({positions, cap_.positions, T_, kv_.capacity});
    if (train) apply_cap({std::max(B, cap_.B), std::max(T_, cap_.T), pos, true});
    else if (cap_.train) apply_cap({cap_.B, std::max(cap_.T, (B * T_ + cap_.B - 1) / cap_.B), pos, true});
    else apply_cap({1, std::max(B * T_, cap_.B * cap_.T), pos, false});  // a forward pass needs rows only
  }

  // (Re)allocates activations and workspace for capacity k.
  void apply_cap(const Cap& k) {
    this->materialize();
    this->relayout(acts_blk_, MemKind::Activations, [&](Carver& c) { lay_out_acts(c, k); }, false);
    this->relayout(ws_blk_, MemKind::Workspace, [&](Carver& c) { lay_out_workspace(c, k); }, false);
    if (k.train && !checkpointing_) work_ = layers_[0];  // eval passes run in layer 0's buffers
    cap_ = k;
    if (!this->meta_) arch().workspace_ready(k.positions);
  }

  void lay_out_acts(Carver& c, const Cap& k) {
    const ModelConfig& m = this->config();
    const int64_t N = k.B * k.T, H = m.hidden;
    if (k.train) {
      layers_.resize(size_t(m.layers));
      for (int64_t l = 0; l < m.layers; l++)
        arch().lay_out_layer(c, layers_[size_t(l)], "layer " + std::to_string(l) + " ", k.B, k.T,
                             checkpointing_ ? LayerPart::Input : LayerPart::Train);
      if (checkpointing_) arch().lay_out_layer(c, work_, "recomputed layer ", k.B, k.T, LayerPart::Train);
    } else {
      layers_.clear();
      arch().lay_out_layer(c, work_, "layer ", k.B, k.T, LayerPart::Eval);
    }
    c.take(top_.x_out, N * H, "final hidden states");
    c.take(top_.lnf, N * H, "final norm output");
    arch().lay_out_top(c, k.B, k.T, k.train);
  }

  void lay_out_workspace(Carver& c, const Cap& k) {
    const int64_t N = k.B * k.T, H = this->config().hidden;
    c.take(top_.x, N * H, "residual stream");
    c.take(top_.ids, N, "token ids");
    c.take(top_.targets, N, "targets");
    head_rows_ = head_chunk_rows(N);
    c.take(top_.logits, head_rows_ * this->config().vocab, "logits (lm_head chunk of " + std::to_string(head_rows_) + " rows)");
    c.take(top_.row_loss, N, "loss per row");
    c.take(top_.dx, k.train ? N * H : 0, "d residual stream");
    c.take(top_.dlnf, k.train ? N * H : 0, "d final norm output");
    c.take(top_.xr, k.train && checkpointing_ ? N * H : 0, "recomputed layer input");
    int64_t max_r = 0, max_in = 0;
    for (Linear<Bk>* lin : arch().linears())
      for (const Lora<Bk>& lo : lin->loras) {
        max_r = std::max(max_r, lo.rank());
        if (lo.dropout > 0) max_in = std::max(max_in, lin->in);
      }
    c.take(lora_ws_.dha, k.train ? N * max_r : 0, "LoRA backward (rank)");
    c.take(lora_ws_.xd, k.train ? N * max_in : 0, "LoRA dropout input");
    arch().lay_out_scratch(c, k.B, k.T, k.positions, k.train);
  }

  // Rows per lm_head chunk for N rows: at most kHeadChunkBytes of logits and kHeadChunkRows rows
  // (enough for the GEMMs to run at full speed: at 1024 rows the head's GEMM is as wide as a
  // layer's), or what set_head_chunk_rows forced (tests: tiny chunks against one whole chunk).
  static constexpr int64_t kHeadChunkBytes = int64_t(128) << 20, kHeadChunkRows = 1024;
  int64_t head_chunk_rows(int64_t N) const {
    const int64_t fit = kHeadChunkBytes / (this->config().vocab * int64_t(sizeof(T)));
    const int64_t r = head_rows_forced_ > 0 ? head_rows_forced_ : std::min(kHeadChunkRows, fit);
    return std::max<int64_t>(1, std::min(r, N));
  }

  void grow_kv(int64_t slots, int64_t positions) {
    const ModelConfig& c = this->config();
    grow_kv_cache(this->bk_, kv_blk_, kv_, slots, c.layers, arch().kv_width(), positions, this->plans_[MemKind::KvCache],
                  this->meta_, this->stats_.allocations[size_t(MemKind::KvCache)]);
  }


  void upload_targets(const int32_t* labels, int64_t B, int64_t Tu) {
    // Targets per internal position (B rows of nv + Tu): virtual positions never count.
    const int64_t nv = last_.nv, T_ = last_.T;
    std::vector<int32_t>& t = targets_;  // kept on the host: head_loss skips chunks without a target
    t.assign(size_t(B * T_), -100);
    for (int64_t b = 0; b < B; b++) std::copy(labels + b * Tu, labels + (b + 1) * Tu, t.begin() + b * T_ + nv);
    this->bk_.upload(top_.targets, t.data(), t.size() * sizeof(int32_t));
  }

  Top top_;
  std::vector<int32_t> targets_;  // the last batch's targets per internal position
  int64_t head_rows_ = 1, head_rows_forced_ = 0;
  std::vector<LayerActs> layers_;  // saved per layer (training)
  LayerActs work_;                 // the layer eval passes run in / checkpointing recomputes in
  LoraScratch<Bk> lora_ws_;
  Block<Bk> acts_blk_, ws_blk_, kv_blk_;
  KvCache<Bk> kv_;
  // A cached forward's rows [row0, row0 + rows) belong to `slot`, from position p0 on.
  struct CachedSpan {
    int64_t slot, p0, row0, rows;
  };
  std::vector<CachedSpan> spans_;
  Cap cap_;
  bool locked_ = false;  // plan() fixed the training capacity
  bool checkpointing_ = false;
  int64_t dropout_row0_ = 0;  // set_dropout_row_offset
  Param<Bk>* prompt_ = nullptr;
  struct Last {
    int64_t B = 0, T = 0, nv = 0, step = 0;
  } last_;
};

}  // namespace sft::model
