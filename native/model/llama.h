// The Llama family (Llama/Llama-2 with GQA, Baichuan-7B's W_pack, Baichuan2's NormHead, Qwen2's
// q/k/v bias and tied head) over any backend: its parameters with their checkpoint names, LoRA
// targets, one decoder layer forward and the mirrored backward. The skeleton around the layers
// (embedding, checkpointing, final norm, head, loss, KV cache) is model/decoder.h.
//
//   forward (per layer)                      backward (per layer, reverse order)
//   ln1   = rmsnorm(x)                       dx   += rmsnorm_bwd(dln1)
//   qkv   = ln1 Wqkv^T (+b) (+LoRA)          dln1  = linear_bwd(dqkv)
//   q,k   = rope(q,k)                        dq,dk = rope_bwd(dq,dk)
//   atty  = attention(q,k,v)                 dqkv  = attention_bwd(datty)
//   x    += atty Wo^T (+LoRA)                datty = linear_bwd(dx)
//   ln2   = rmsnorm(x)                       dx   += rmsnorm_bwd(dln2)
//   g,u   = ln2 Wg^T, ln2 Wu^T (+LoRA)       dln2  = linear_bwd(dg) + linear_bwd(du)
//   h     = silu(g) * u                      dg,du = swiglu_bwd(dh)
//   x    += h Wd^T (+LoRA)                   dh    = linear_bwd(dx)
//
// Layout decisions (why):
// - q, k and v live in ONE fused matrix [(nh + 2 nkv) * hd, hidden] per layer, rows in the order
//   Q, K, V. That is Baichuan's W_pack as is, and Llama/Qwen2's q_proj/k_proj/v_proj stacked; a
//   LoRA on q_proj is a LoRA on the Q row block, one on W_pack spans all rows. One matmul per layer.
// - Backward functions accumulate (+=), so residual branches and shared inputs need no copies.
#pragma once
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "model/decoder.h"
#include "model/modules.h"

namespace sft::model {

// What one layer keeps: its forward's buffers, the adapters' saved activations.
template <class Bk>
struct LlamaLayerActs {
  using T = typename Bk::T;
  using G = typename Bk::G;
  using Saved = typename Bk::Saved;
  T *x_in = nullptr, *ln1 = nullptr, *qkv = nullptr, *atty = nullptr, *x_mid = nullptr, *ln2 = nullptr;
  T *gate = nullptr, *up = nullptr, *h = nullptr;
  G *rstd1 = nullptr, *rstd2 = nullptr;
  Saved* att = nullptr;  // what attention keeps for backward (training)
  std::vector<LoraActs<Bk>> lora;  // in forward order: qkv, o, gate, up, down
};

template <class Bk>
class LlamaModel final : public Decoder<Bk, LlamaModel<Bk>, LlamaLayerActs<Bk>> {
  friend class Decoder<Bk, LlamaModel<Bk>, LlamaLayerActs<Bk>>;
  using Base = Decoder<Bk, LlamaModel<Bk>, LlamaLayerActs<Bk>>;
  using LayerActs = LlamaLayerActs<Bk>;
  using T = typename Bk::T;
  using G = typename Bk::G;
  using Saved = typename Bk::Saved;

  struct Layer {
    Param<Bk>* ln1;
    Param<Bk>* ln2;
    Linear<Bk> qkv, o, gate, up, down;
  };

 public:
  LlamaModel(const ModelConfig& c, bool meta) : Base(meta), c_(c) {
    c_.validate();
    require_ops(c_);
    const int64_t H = c.hidden, I = c.intermediate, V = c.vocab, hd = c.head_dim();
    const int64_t qdim = c.heads * hd, kvdim = c.kv_heads * hd;
    embed_ = this->add_tensor("model.embed_tokens.weight", {V, H});
    for (int64_t l = 0; l < c.layers; l++) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      Layer L;
      L.ln1 = this->add_tensor(p + "input_layernorm.weight", {H}, false);
      // The fused q/k/v matrix has an internal name; the checkpoint's names are views of its rows.
      L.qkv.in = H, L.qkv.out = c.qkv_dim();
      L.qkv.W = this->add_param(p + "self_attn.qkv.weight", {c.qkv_dim(), H});
      if (c.qkv_bias) L.qkv.b = this->add_param(p + "self_attn.qkv.bias", {c.qkv_dim()}, false);
      if (c.arch == Arch::Baichuan || c.arch == Arch::Baichuan2) {
        this->view(p + "self_attn.W_pack.weight", L.qkv.W, 0, c.qkv_dim(), H, {c.qkv_dim(), H});
      } else {
        this->view(p + "self_attn.q_proj.weight", L.qkv.W, 0, qdim, H, {qdim, H});
        this->view(p + "self_attn.k_proj.weight", L.qkv.W, qdim, kvdim, H, {kvdim, H});
        this->view(p + "self_attn.v_proj.weight", L.qkv.W, qdim + kvdim, kvdim, H, {kvdim, H});
        if (c.qkv_bias) {
          this->view(p + "self_attn.q_proj.bias", L.qkv.b, 0, qdim, 1, {qdim});
          this->view(p + "self_attn.k_proj.bias", L.qkv.b, qdim, kvdim, 1, {kvdim});
          this->view(p + "self_attn.v_proj.bias", L.qkv.b, qdim + kvdim, kvdim, 1, {kvdim});
        }
      }
      L.o = this->add_linear(p + "self_attn.o_proj.weight", qdim, H);
      L.ln2 = this->add_tensor(p + "post_attention_layernorm.weight", {H}, false);
      L.gate = this->add_linear(p + "mlp.gate_proj.weight", H, I);
      L.up = this->add_linear(p + "mlp.up_proj.weight", H, I);
      L.down = this->add_linear(p + "mlp.down_proj.weight", I, H);
      layers_.push_back(L);
    }
    norm_ = this->add_tensor("model.norm.weight", {H}, false);
    if (!c.tie_embeddings) head_ = this->add_tensor("lm_head.weight", {V, H});
  }

  // The ops a Llama-family model needs from its backend (checked before anything is allocated).
  static void require_ops(const ModelConfig& c) {
    std::vector<Op> ops = {Op::Linear, Op::Gemm, Op::RmsNorm, Op::Rope, Op::Attention, Op::SwiGLU, Op::Embedding,
                           Op::CrossEntropy, Op::Dropout, Op::DataMovement, Op::AdamW};
    if (c.norm_head) ops.push_back(Op::L2NormRows);
    for (Op op : ops)
      if (!Bk::supports(op))
        throw std::runtime_error(std::string("the ") + device_name(Bk::device) + " backend (" + compute_name(Bk::compute) +
                                 ") has no " + op_name(op) + " yet, which " + arch_name(c.arch) + " needs");
  }

  const ModelConfig& config() const override { return c_; }

  std::vector<ParamInfo> add_lora(const LoraOptions& o) override {
    this->check_lora_options(o);
    check_lora_targets(c_.arch, o.targets);
    const int64_t hd = c_.head_dim(), qdim = c_.heads * hd, kvdim = c_.kv_heads * hd;
    std::vector<ParamInfo> added;
    for (int64_t l = 0; l < c_.layers; l++) {
      Layer& L = layers_[size_t(l)];
      const std::string p = "model.layers." + std::to_string(l) + ".";
      for (const auto& t : o.targets) {
        Linear<Bk>* lin = nullptr;
        int64_t row0 = 0, rows = 0;
        std::string mod;
        if (t == "q_proj") lin = &L.qkv, row0 = 0, rows = qdim, mod = p + "self_attn.q_proj";
        else if (t == "k_proj") lin = &L.qkv, row0 = qdim, rows = kvdim, mod = p + "self_attn.k_proj";
        else if (t == "v_proj") lin = &L.qkv, row0 = qdim + kvdim, rows = kvdim, mod = p + "self_attn.v_proj";
        else if (t == "W_pack") lin = &L.qkv, row0 = 0, rows = c_.qkv_dim(), mod = p + "self_attn.W_pack";
        else if (t == "o_proj") lin = &L.o, rows = L.o.out, mod = p + "self_attn.o_proj";
        else if (t == "gate_proj") lin = &L.gate, rows = L.gate.out, mod = p + "mlp.gate_proj";
        else if (t == "up_proj") lin = &L.up, rows = L.up.out, mod = p + "mlp.up_proj";
        else lin = &L.down, rows = L.down.out, mod = p + "mlp.down_proj";
        this->attach_lora(*lin, mod, row0, rows, o, added);
      }
    }
    this->init_adapters();
    return added;
  }

  void merge_lora() override { this->merge_linears(linears()); }

  // One NF4 tensor per checkpoint tensor of each matrix (q_proj, k_proj, v_proj separately; W_pack
  // whole), so blocks and double-quant offsets match bitsandbytes'.
  std::pair<int64_t, int64_t> quantize_nf4(bool double_quant) override { return this->quantize_linears(linears(), double_quant); }

 private:
  // ---- the skeleton's hooks (model/decoder.h) ----------------------------------------------------

  std::vector<Linear<Bk>*> linears() {
    std::vector<Linear<Bk>*> out;
    for (Layer& L : layers_)
      for (Linear<Bk>* lin : {&L.qkv, &L.o, &L.gate, &L.up, &L.down}) out.push_back(lin);
    return out;
  }

  int64_t kv_width() const { return c_.kv_heads * c_.head_dim(); }

  void lay_out_layer(Carver& c, LayerActs& L, const std::string& p, int64_t B, int64_t T_, LayerPart part) {
    const int64_t N = B * T_, H = c_.hidden, I = c_.intermediate, Q = c_.qkv_dim(), qdim = c_.heads * c_.head_dim();
    const bool all = part != LayerPart::Input, train = part == LayerPart::Train;
    const int64_t n = all ? N : 0;
    c.take(L.x_in, N * H, p + "input");
    c.take(L.ln1, n * H, p + "input_layernorm");
    c.take(L.rstd1, n, p + "input_layernorm rstd");
    c.take(L.qkv, n * Q, p + "qkv");
    c.take(L.att, train ? Bk::attention_saved_elems(B, c_.heads, T_, T_) : 0, p + "attention (saved)");
    c.take(L.atty, n * qdim, p + "attention output");
    c.take(L.x_mid, n * H, p + "residual after attention");
    c.take(L.ln2, n * H, p + "post_attention_layernorm");
    c.take(L.rstd2, n, p + "post_attention_layernorm rstd");
    c.take(L.gate, n * I, p + "gate_proj");
    c.take(L.up, n * I, p + "up_proj");
    c.take(L.h, n * I, p + "swiglu");
    size_t li = 0;
    if (all) {
      const Layer& Lw = layers_[0];  // every layer has the same adapters
      for (const Linear<Bk>* lin : {&Lw.qkv, &Lw.o, &Lw.gate, &Lw.up, &Lw.down})
        lay_out_lora_acts(c, *lin, L.lora, li, N, p);
    }
    L.lora.resize(li);
  }

  void lay_out_top(Carver& c, int64_t B, int64_t T_, bool train) { c.take(rstdf_, B * T_, "final norm rstd"); }

  void lay_out_scratch(Carver& c, int64_t B, int64_t T_, int64_t positions, bool train) {
    const int64_t N = B * T_, H = c_.hidden, I = c_.intermediate, Q = c_.qkv_dim(), qdim = c_.heads * c_.head_dim();
    const int64_t n = train ? N : 0;
    c.take(dh_, n * I, "d swiglu");
    c.take(dgate_, n * I, "d gate_proj");
    c.take(dup_, n * I, "d up_proj");
    c.take(dln_, n * H, "d norm output");
    c.take(datty_, n * qdim, "d attention output");
    c.take(dqkv_, n * Q, "d qkv");
    const bool dwn = train && c_.norm_head && head()->trainable;
    c.take(dWn_, dwn ? c_.vocab * H : 0, "d lm_head (normalised rows)");
    c.take(cos_, positions * (c_.head_dim() / 2), "rotary cos");
    c.take(sin_, positions * (c_.head_dim() / 2), "rotary sin");
  }

  void lay_out_derived(Carver& c) override {
    c.take(head_norm_, c_.norm_head ? c_.vocab * c_.hidden : 0, "lm_head (NormHead: rows normalised)");
  }

  // cos/sin tables [positions, hd/2], computed as transformers does in fp32 (inv_freq, angle).
  void workspace_ready(int64_t positions) {
    const int64_t hd = c_.head_dim(), half = hd / 2;
    std::vector<G> cs(size_t(positions * half)), sn(size_t(positions * half));
    for (int64_t i = 0; i < half; i++) {
      if (std::is_same<G, float>::value) {
        const float inv = 1.0f / std::pow(float(c_.rope_theta), float(2 * i) / float(hd));
        for (int64_t pos = 0; pos < positions; pos++) {
          const float ang = float(pos) * inv;
          cs[size_t(pos * half + i)] = G(std::cos(double(ang)));
          sn[size_t(pos * half + i)] = G(std::sin(double(ang)));
        }
      } else {
        const double inv = 1.0 / std::pow(c_.rope_theta, double(2 * i) / double(hd));
        for (int64_t pos = 0; pos < positions; pos++) {
          cs[size_t(pos * half + i)] = G(std::cos(double(pos) * inv));
          sn[size_t(pos * half + i)] = G(std::sin(double(pos) * inv));
        }
      }
    }
    this->bk_.upload(cos_, cs.data(), cs.size() * sizeof(G));
    this->bk_.upload(sin_, sn.data(), sn.size() * sizeof(G));
  }

  void weights_changed() override { head_dirty_ = true; }

  Param<Bk>* head() const { return c_.tie_embeddings ? embed_ : head_; }
  // lm_head as the skeleton may pack it for inference: its own matrix, read only by the head GEMM.
  Param<Bk>* inference_head() const { return c_.tie_embeddings || c_.norm_head ? nullptr : head_; }

  // The output matrix lm_head uses: the embedding when tied, rows L2-normalised for Baichuan2's
  // NormHead (recomputed only after the weights change).
  const T* head_weights() {
    if (!c_.norm_head) return head()->w;
    if (head_dirty_) {
      this->bk_.l2norm_rows_forward(head_norm_, head()->w, c_.vocab, c_.hidden, 1e-12);
      head_dirty_ = false;
    }
    return head_norm_;
  }

  void embed_forward(T* x, const int32_t* ids, int64_t B, int64_t Tu, int64_t nv) {
    this->embed_rows(x, ids, embed_->w, B, Tu, nv, c_.hidden);
  }

  void embed_backward(const T* dx, const int32_t* ids, int64_t B, int64_t Tu, int64_t nv) {
    this->embed_rows_backward(embed_, dx, ids, B, Tu, nv, c_.hidden);
  }

  void final_forward(T* lnf, const T* x, int64_t N) {
    this->bk_.rmsnorm_forward(lnf, rstdf_, x, norm_->w, N, c_.hidden, c_.norm_eps);
  }

  void final_backward(T* dx, const T* dlnf, const T* x, int64_t N) {
    this->bk_.rmsnorm_backward(dx, norm_->trainable ? norm_->g : nullptr, dlnf, x, norm_->w, rstdf_, N, c_.hidden);
  }

  // Where head_loss adds lm_head's gradient over its chunks (null when frozen): the head's own
  // gradient, or for NormHead the gradient of the normalised rows, which head_grad_end takes
  // through the normalisation into the raw rows once all chunks are in.
  G* head_grad_begin() {
    Param<Bk>* h = head();
    if (!h->trainable) return nullptr;
    if (!c_.norm_head) return h->g;
    this->bk_.zero(dWn_, size_t(c_.vocab * c_.hidden) * sizeof(G));
    return dWn_;
  }

  void head_grad_end() {
    Param<Bk>* h = head();
    if (h->trainable && c_.norm_head) this->bk_.l2norm_rows_backward(h->g, dWn_, h->w, c_.vocab, c_.hidden, 1e-12);
  }

  // One decoder layer: x [B*T_, H] is the residual stream (input, then output); L receives the
  // activations backward needs.
  void layer_forward(int64_t l, T* x, LayerActs& L, int64_t B, int64_t T_, Mode mode, int64_t step) {
    const int64_t N = B * T_, H = c_.hidden, I = c_.intermediate, hd = c_.head_dim();
    const int64_t Q = c_.qkv_dim(), qdim = c_.heads * hd, kvdim = c_.kv_heads * hd;
    const int nh = int(c_.heads), nkv = int(c_.kv_heads);
    Bk& bk = this->bk_;
    Layer& Lw = layers_[size_t(l)];
    size_t li = 0;
    bk.copy(L.x_in, x, size_t(N * H) * sizeof(T));
    bk.rmsnorm_forward(L.ln1, L.rstd1, L.x_in, Lw.ln1->w, N, H, c_.norm_eps);
    linear_forward(bk, Lw.qkv, L.qkv, L.ln1, N, L.lora, li, mode, step, this->lora_ws_);
    if (mode == Mode::Cached) {
      // Each span's rows are one sequence from position p0 on: rotate them there, append their keys
      // and values to the slot's cache, attend over what it holds.
      for (const auto& s : this->spans_) {
        T* qkv = L.qkv + s.row0 * Q;
        bk.rope_forward(qkv, Q, s.rows, s.rows, s.p0, nh, int(hd), cos_, sin_);
        bk.rope_forward(qkv + qdim, Q, s.rows, s.rows, s.p0, nkv, int(hd), cos_, sin_);
        T* kc = this->kv_.keys(s.slot, l);
        T* vc = this->kv_.values(s.slot, l);
        bk.copy_2d(kc + s.p0 * kvdim, kvdim, qkv + qdim, Q, s.rows, kvdim);
        bk.copy_2d(vc + s.p0 * kvdim, kvdim, qkv + qdim + kvdim, Q, s.rows, kvdim);
        bk.attention_forward(L.atty + s.row0 * qdim, nullptr, qkv, Q, kc, vc, kvdim, 1, s.rows, s.p0 + s.rows, s.p0, nh, nkv, int(hd));
      }
    } else {
      bk.rope_forward(L.qkv, Q, N, T_, 0, nh, int(hd), cos_, sin_);
      bk.rope_forward(L.qkv + qdim, Q, N, T_, 0, nkv, int(hd), cos_, sin_);
      bk.attention_forward(L.atty, mode == Mode::Train ? L.att : nullptr, L.qkv, Q, L.qkv + qdim, L.qkv + qdim + kvdim, Q,
                           B, T_, T_, 0, nh, nkv, int(hd));
    }
    // residual: x_mid = x_in + atty Wo^T  (x already holds x_in)
    linear_forward(bk, Lw.o, x, L.atty, N, L.lora, li, mode, step, this->lora_ws_, /*accumulate=*/true);
    bk.copy(L.x_mid, x, size_t(N * H) * sizeof(T));
    bk.rmsnorm_forward(L.ln2, L.rstd2, L.x_mid, Lw.ln2->w, N, H, c_.norm_eps);
    linear_forward(bk, Lw.gate, L.gate, L.ln2, N, L.lora, li, mode, step, this->lora_ws_);
    linear_forward(bk, Lw.up, L.up, L.ln2, N, L.lora, li, mode, step, this->lora_ws_);
    bk.swiglu_forward(L.h, L.gate, L.up, N * I);
    linear_forward(bk, Lw.down, x, L.h, N, L.lora, li, mode, step, this->lora_ws_, /*accumulate=*/true);
  }

  // dx [B*T_, H]: in, the gradient of the layer's output; out, of its input.
  void layer_backward(int64_t l, T* dx, LayerActs& L, int64_t B, int64_t T_, int64_t step) {
    const int64_t N = B * T_, H = c_.hidden, I = c_.intermediate, hd = c_.head_dim();
    const int64_t Q = c_.qkv_dim(), qdim = c_.heads * hd, kvdim = c_.kv_heads * hd;
    const int nh = int(c_.heads), nkv = int(c_.kv_heads);
    Bk& bk = this->bk_;
    Layer& Lw = layers_[size_t(l)];
    const LoraScratch<Bk>& ws = this->lora_ws_;
    // LoRA activations were saved in forward order qkv, o, gate, up, down; find each block's start.
    const size_t li_qkv = 0, li_o = li_qkv + Lw.qkv.loras.size(), li_gate = li_o + Lw.o.loras.size(),
                 li_up = li_gate + Lw.gate.loras.size(), li_down = li_up + Lw.up.loras.size();
    size_t li;
    // MLP
    bk.zero(dh_, size_t(N * I) * sizeof(T));
    li = li_down;
    linear_backward(bk, Lw.down, dh_, dx, L.h, N, L.lora, li, step, ws);
    bk.zero(dgate_, size_t(N * I) * sizeof(T));
    bk.zero(dup_, size_t(N * I) * sizeof(T));
    bk.swiglu_backward(dgate_, dup_, dh_, L.gate, L.up, N * I);
    bk.zero(dln_, size_t(N * H) * sizeof(T));
    li = li_gate;
    linear_backward(bk, Lw.gate, dln_, dgate_, L.ln2, N, L.lora, li, step, ws);
    li = li_up;
    linear_backward(bk, Lw.up, dln_, dup_, L.ln2, N, L.lora, li, step, ws);
    bk.rmsnorm_backward(dx, Lw.ln2->trainable ? Lw.ln2->g : nullptr, dln_, L.x_mid, Lw.ln2->w, L.rstd2, N, H);
    // attention
    bk.zero(datty_, size_t(N * qdim) * sizeof(T));
    li = li_o;
    linear_backward(bk, Lw.o, datty_, dx, L.atty, N, L.lora, li, step, ws);
    bk.zero(dqkv_, size_t(N * Q) * sizeof(T));
    bk.attention_backward(dqkv_, dqkv_ + qdim, dqkv_ + qdim + kvdim, datty_, L.atty, L.att, L.qkv, Q, L.qkv + qdim,
                          L.qkv + qdim + kvdim, Q, B, T_, T_, 0, nh, nkv, int(hd));
    bk.rope_backward(dqkv_, Q, N, T_, 0, nh, int(hd), cos_, sin_);
    bk.rope_backward(dqkv_ + qdim, Q, N, T_, 0, nkv, int(hd), cos_, sin_);
    bk.zero(dln_, size_t(N * H) * sizeof(T));
    li = li_qkv;
    linear_backward(bk, Lw.qkv, dln_, dqkv_, L.ln1, N, L.lora, li, step, ws);
    bk.rmsnorm_backward(dx, Lw.ln1->trainable ? Lw.ln1->g : nullptr, dln_, L.x_in, Lw.ln1->w, L.rstd1, N, H);
  }

  ModelConfig c_;
  Param<Bk>* embed_ = nullptr;
  Param<Bk>* norm_ = nullptr;
  Param<Bk>* head_ = nullptr;
  std::vector<Layer> layers_;
  bool head_dirty_ = true;
  // Planned buffers: derived weights, the final norm's statistics, backward's scratch, rotary tables.
  T* head_norm_ = nullptr;
  G* rstdf_ = nullptr;
  T *dh_ = nullptr, *dgate_ = nullptr, *dup_ = nullptr, *dln_ = nullptr, *datty_ = nullptr, *dqkv_ = nullptr;
  G* dWn_ = nullptr;
  G *cos_ = nullptr, *sin_ = nullptr;
};

}  // namespace sft::model
