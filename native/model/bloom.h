// Bloom (BloomForCausalLM) over any backend: ALiBi attention, LayerNorm with biases (also on the
// embeddings), tanh-form GELU MLP, every linear with a bias, lm_head tied to the embeddings. The
// skeleton around the layers is model/decoder.h.
//
//   forward                                  backward (reverse order)
//   e     = embed(ids)                       dembed += embed_bwd(de)
//   x     = layernorm_e(e)                   de      = layernorm_bwd(dx)
//   per layer:                               per layer, reverse:
//   ln1   = layernorm(x)                     dx     += layernorm_bwd(dln1)
//   qkv   = ln1 Wqkv^T + b (+LoRA)           dln1    = linear_bwd(dqkv)
//   atty  = alibi_attention(qkv)             dqkv    = attention_bwd(datty)
//   x    += atty Wd^T + b (+LoRA)            datty   = linear_bwd(dx)
//   ln2   = layernorm(x)                     dx     += layernorm_bwd(dln2)
//   fc    = ln2 W1^T + b (+LoRA)             dln2    = linear_bwd(dfc)
//   h     = gelu(fc)                         dfc     = gelu_bwd(dh)
//   x    += h W2^T + b (+LoRA)               dh      = linear_bwd(dx)
//   lnf   = layernorm_f(x)                   dx      = layernorm_bwd(dlnf)
//   logits = lnf Wemb^T                      dlnf    = linear_bwd(dlogits)
// The residual is the un-normalised stream (apply_residual_connection_post_layernorm = false, as
// every published Bloom); hidden/attention dropout are 0 in those configs and not applied here.
//
// Layout decisions (why):
// - query_key_value stays ONE matrix [3H, H] in the checkpoint's own row order, interleaved per
//   head: row h*3d + j*d + e is q (j = 0), k (1) or v (2) of head h. The attention reads q, k and
//   v of head h at columns h*3d, h*3d + d, h*3d + 2d of the fused output row (head stride 3d), so
//   nothing is ever reordered: a LoRA on query_key_value adapts all 3H rows in that order, which
//   is also the order of PEFT's lora_B rows, and NF4 quantizes the checkpoint tensor as stored.
// - The KV cache holds k and v de-interleaved, [position, H] per layer (head h at h*d).
// - Parameters are named as BloomForCausalLM's state dict ("transformer." prefix); checkpoints
//   saved from BloomModel without the prefix load too (the prefix is optional on lookup).
#pragma once
#include <stdexcept>
#include <string>
#include <vector>

#include "model/decoder.h"
#include "model/modules.h"

namespace sft::model {

// What one layer keeps: its forward's buffers, the adapters' saved activations.
template <class Bk>
struct BloomLayerActs {
  using T = typename Bk::T;
  using G = typename Bk::G;
  using Saved = typename Bk::Saved;
  T *x_in = nullptr, *ln1 = nullptr, *qkv = nullptr, *atty = nullptr, *x_mid = nullptr, *ln2 = nullptr;
  T *fc = nullptr, *h = nullptr;
  G *mean1 = nullptr, *rstd1 = nullptr, *mean2 = nullptr, *rstd2 = nullptr;
  Saved* att = nullptr;
  std::vector<LoraActs<Bk>> lora;  // in forward order: qkv, dense, fc1, fc2
};

template <class Bk>
class BloomModel final : public Decoder<Bk, BloomModel<Bk>, BloomLayerActs<Bk>> {
  friend class Decoder<Bk, BloomModel<Bk>, BloomLayerActs<Bk>>;
  using Base = Decoder<Bk, BloomModel<Bk>, BloomLayerActs<Bk>>;
  using LayerActs = BloomLayerActs<Bk>;
  using T = typename Bk::T;
  using G = typename Bk::G;
  using Saved = typename Bk::Saved;

  struct Norm {
    Param<Bk>* w;
    Param<Bk>* b;
  };
  struct Layer {
    Norm ln1, ln2;
    Linear<Bk> qkv, dense, fc1, fc2;  // fc1 = dense_h_to_4h, fc2 = dense_4h_to_h
  };

 public:
  BloomModel(const ModelConfig& c, bool meta) : Base(meta), c_(c) {
    c_.validate();
    if (c.arch != Arch::Bloom) throw std::runtime_error("BloomModel built for another architecture");
    if (c.kv_heads != c.heads) throw std::runtime_error("invalid model config: bloom has one k/v head per attention head");
    if (c.norm_head) throw std::runtime_error("invalid model config: bloom has no NormHead");
    for (Op op : {Op::Linear, Op::Gemm, Op::LayerNorm, Op::AlibiAttention, Op::Gelu, Op::Embedding, Op::CrossEntropy,
                  Op::Dropout, Op::DataMovement, Op::AdamW})
      if (!Bk::supports(op))
        throw std::runtime_error(std::string("the ") + device_name(Bk::device) + " backend (" + compute_name(Bk::compute) +
                                 ") has no " + op_name(op) + " yet, which bloom needs");
    const int64_t H = c.hidden, I = c.intermediate, V = c.vocab;
    this->optional_prefix_ = "transformer.";
    embed_ = this->add_tensor("transformer.word_embeddings.weight", {V, H});
    embed_ln_ = add_norm("transformer.word_embeddings_layernorm");
    for (int64_t l = 0; l < c.layers; l++) {
      const std::string p = "transformer.h." + std::to_string(l) + ".";
      Layer L;
      L.ln1 = add_norm(p + "input_layernorm");
      L.qkv = this->add_linear(p + "self_attention.query_key_value.weight", H, 3 * H, p + "self_attention.query_key_value.bias");
      L.dense = this->add_linear(p + "self_attention.dense.weight", H, H, p + "self_attention.dense.bias");
      L.ln2 = add_norm(p + "post_attention_layernorm");
      L.fc1 = this->add_linear(p + "mlp.dense_h_to_4h.weight", H, I, p + "mlp.dense_h_to_4h.bias");
      L.fc2 = this->add_linear(p + "mlp.dense_4h_to_h.weight", I, H, p + "mlp.dense_4h_to_h.bias");
      layers_.push_back(L);
    }
    lnf_ = add_norm("transformer.ln_f");
    if (!c.tie_embeddings) head_ = this->add_tensor("lm_head.weight", {V, H});
  }

  const ModelConfig& config() const override { return c_; }

  std::vector<ParamInfo> add_lora(const LoraOptions& o) override {
    this->check_lora_options(o);
    check_lora_targets(c_.arch, o.targets);
    std::vector<ParamInfo> added;
    for (int64_t l = 0; l < c_.layers; l++) {
      Layer& L = layers_[size_t(l)];
      const std::string p = "transformer.h." + std::to_string(l) + ".";
      for (const auto& t : o.targets) {
        // PEFT matches a target by the module path's last component: "dense" is only the attention's.
        if (t == "query_key_value") this->attach_lora(L.qkv, p + "self_attention.query_key_value", 0, L.qkv.out, o, added);
        else if (t == "dense") this->attach_lora(L.dense, p + "self_attention.dense", 0, L.dense.out, o, added);
        else if (t == "dense_h_to_4h") this->attach_lora(L.fc1, p + "mlp.dense_h_to_4h", 0, L.fc1.out, o, added);
        else this->attach_lora(L.fc2, p + "mlp.dense_4h_to_h", 0, L.fc2.out, o, added);
      }
    }
    this->init_adapters();
    return added;
  }

  void merge_lora() override { this->merge_linears(linears()); }

  std::pair<int64_t, int64_t> quantize_nf4(bool double_quant) override { return this->quantize_linears(linears(), double_quant); }

 private:
  Norm add_norm(const std::string& prefix) {
    const int64_t H = c_.hidden;
    return {this->add_tensor(prefix + ".weight", {H}, false), this->add_tensor(prefix + ".bias", {H}, false)};
  }

  void norm_fwd(const Norm& n, T* y, G* mean, G* rstd, const T* x, int64_t N) {
    this->bk_.layernorm_forward(y, mean, rstd, x, n.w->w, n.b->w, N, c_.hidden, c_.norm_eps);
  }
  // dx += layernorm_bwd(dy); weight/bias grads when trainable.
  void norm_bwd(const Norm& n, T* dx, const T* dy, const T* x, const G* mean, const G* rstd, int64_t N) {
    this->bk_.layernorm_backward(dx, n.w->trainable ? n.w->g : nullptr, n.b->trainable ? n.b->g : nullptr, dy, x, n.w->w,
                                 mean, rstd, N, c_.hidden);
  }

  Param<Bk>* head() const { return c_.tie_embeddings ? embed_ : head_; }
  // lm_head as the skeleton may pack it for inference: its own matrix, read only by the head GEMM.
  Param<Bk>* inference_head() const { return c_.tie_embeddings ? nullptr : head_; }

  // ---- the skeleton's hooks (model/decoder.h) ----------------------------------------------------

  std::vector<Linear<Bk>*> linears() {
    std::vector<Linear<Bk>*> lins;
    for (Layer& L : layers_)
      for (Linear<Bk>* lin : {&L.qkv, &L.dense, &L.fc1, &L.fc2}) lins.push_back(lin);
    return lins;
  }

  int64_t kv_width() const { return c_.hidden; }

  void lay_out_layer(Carver& c, LayerActs& L, const std::string& p, int64_t B, int64_t T_, LayerPart part) {
    const int64_t N = B * T_, H = c_.hidden, I = c_.intermediate;
    const bool all = part != LayerPart::Input, train = part == LayerPart::Train;
    const int64_t n = all ? N : 0;
    c.take(L.x_in, N * H, p + "input");
    c.take(L.ln1, n * H, p + "input_layernorm");
    c.take(L.mean1, n, p + "input_layernorm mean");
    c.take(L.rstd1, n, p + "input_layernorm rstd");
    c.take(L.qkv, n * 3 * H, p + "query_key_value");
    c.take(L.att, train ? Bk::attention_saved_elems(B, c_.heads, T_, T_) : 0, p + "attention (saved)");
    c.take(L.atty, n * H, p + "attention output");
    c.take(L.x_mid, n * H, p + "residual after attention");
    c.take(L.ln2, n * H, p + "post_attention_layernorm");
    c.take(L.mean2, n, p + "post_attention_layernorm mean");
    c.take(L.rstd2, n, p + "post_attention_layernorm rstd");
    c.take(L.fc, n * I, p + "dense_h_to_4h");
    c.take(L.h, n * I, p + "gelu");
    size_t li = 0;
    if (all) {
      const Layer& Lw = layers_[0];  // every layer has the same adapters
      for (const Linear<Bk>* lin : {&Lw.qkv, &Lw.dense, &Lw.fc1, &Lw.fc2}) lay_out_lora_acts(c, *lin, L.lora, li, N, p);
    }
    L.lora.resize(li);
  }

  void lay_out_top(Carver& c, int64_t B, int64_t T_, bool train) {
    const int64_t N = B * T_;
    c.take(emb_, N * c_.hidden, "embeddings");
    c.take(meane_, N, "word_embeddings_layernorm mean");
    c.take(rstde_, N, "word_embeddings_layernorm rstd");
    c.take(meanf_, N, "ln_f mean");
    c.take(rstdf_, N, "ln_f rstd");
  }

  void lay_out_scratch(Carver& c, int64_t B, int64_t T_, int64_t /*positions*/, bool train) {
    const int64_t n = train ? B * T_ : 0, H = c_.hidden, I = c_.intermediate;
    c.take(dh_, n * I, "d gelu");
    c.take(dfc_, n * I, "d dense_h_to_4h");
    c.take(dln_, n * H, "d norm output");
    c.take(datty_, n * H, "d attention output");
    c.take(dqkv_, n * 3 * H, "d query_key_value");
    c.take(demb_, n * H, "d embeddings");
  }

  void lay_out_derived(Carver& c) override { c.take(slopes_, c_.heads, "ALiBi slopes"); }

  void workspace_ready(int64_t) {}

  // The slopes are constants in the weights block: set once it exists (a relayout copies them).
  void weights_changed() override {
    if (slopes_ && !slopes_set_) this->bk_.alibi_slopes(slopes_, int(c_.heads)), slopes_set_ = true;
  }

  const T* head_weights() { return head()->w; }

  void embed_forward(T* x, const int32_t* ids, int64_t B, int64_t Tu, int64_t nv) {
    // Prompt tuning prepends the virtual tokens before the embedding LayerNorm, as PEFT feeds them
    // in as inputs_embeds.
    this->embed_rows(emb_, ids, embed_->w, B, Tu, nv, c_.hidden);
    norm_fwd(embed_ln_, x, meane_, rstde_, emb_, B * (Tu + nv));
  }

  void embed_backward(const T* dx, const int32_t* ids, int64_t B, int64_t Tu, int64_t nv) {
    if (!(embed_->trainable || nv || embed_ln_.w->trainable || embed_ln_.b->trainable)) return;
    const int64_t N = B * (Tu + nv);
    this->bk_.zero(demb_, size_t(N * c_.hidden) * sizeof(T));
    norm_bwd(embed_ln_, demb_, dx, emb_, meane_, rstde_, N);
    this->embed_rows_backward(embed_, demb_, ids, B, Tu, nv, c_.hidden);
  }

  void final_forward(T* lnf, const T* x, int64_t N) { norm_fwd(lnf_, lnf, meanf_, rstdf_, x, N); }
  void final_backward(T* dx, const T* dlnf, const T* x, int64_t N) { norm_bwd(lnf_, dx, dlnf, x, meanf_, rstdf_, N); }

  // Where head_loss adds lm_head's gradient over its chunks (null when frozen).
  G* head_grad_begin() { return head()->trainable ? head()->g : nullptr; }
  void head_grad_end() {}

  // One decoder layer: x [B*T_, H] is the residual stream (input, then output); L receives the
  // activations backward needs.
  void layer_forward(int64_t l, T* x, LayerActs& L, int64_t B, int64_t T_, Mode mode, int64_t step) {
    const int64_t N = B * T_, H = c_.hidden, I = c_.intermediate, hd = c_.head_dim(), Q = 3 * H;
    const int nh = int(c_.heads);
    Bk& bk = this->bk_;
    Layer& Lw = layers_[size_t(l)];
    size_t li = 0;
    bk.copy(L.x_in, x, size_t(N * H) * sizeof(T));
    norm_fwd(Lw.ln1, L.ln1, L.mean1, L.rstd1, L.x_in, N);
    linear_forward(bk, Lw.qkv, L.qkv, L.ln1, N, L.lora, li, mode, step, this->lora_ws_);
    if (mode == Mode::Cached) {
      for (const auto& s : this->spans_) {  // each span: one sequence's rows, from position p0 of its slot
        const T* qkv = L.qkv + s.row0 * Q;
        T* kc = this->kv_.keys(s.slot, l);
        T* vc = this->kv_.values(s.slot, l);
        // Row t, head h of the fused output (stride 3hd per head) to cache row p0 + t, head h.
        bk.copy_2d(kc + s.p0 * H, hd, qkv + hd, 3 * hd, s.rows * nh, hd);
        bk.copy_2d(vc + s.p0 * H, hd, qkv + 2 * hd, 3 * hd, s.rows * nh, hd);
        bk.alibi_attention_forward(L.atty + s.row0 * H, nullptr, qkv, Q, 3 * hd, kc, vc, H, hd, slopes_, 1, s.rows, s.p0 + s.rows,
                                   s.p0, nh, int(hd));
      }
    } else {
      bk.alibi_attention_forward(L.atty, mode == Mode::Train ? L.att : nullptr, L.qkv, Q, 3 * hd, L.qkv + hd, L.qkv + 2 * hd,
                                 Q, 3 * hd, slopes_, B, T_, T_, 0, nh, int(hd));
    }
    // residual: x_mid = x_in + atty Wd^T + b  (x already holds x_in)
    linear_forward(bk, Lw.dense, x, L.atty, N, L.lora, li, mode, step, this->lora_ws_, /*accumulate=*/true);
    bk.copy(L.x_mid, x, size_t(N * H) * sizeof(T));
    norm_fwd(Lw.ln2, L.ln2, L.mean2, L.rstd2, L.x_mid, N);
    linear_forward(bk, Lw.fc1, L.fc, L.ln2, N, L.lora, li, mode, step, this->lora_ws_);
    bk.gelu_forward(L.h, L.fc, N * I);
    linear_forward(bk, Lw.fc2, x, L.h, N, L.lora, li, mode, step, this->lora_ws_, /*accumulate=*/true);
  }

  void layer_backward(int64_t l, T* dx, LayerActs& L, int64_t B, int64_t T_, int64_t step) {
    const int64_t N = B * T_, H = c_.hidden, I = c_.intermediate, hd = c_.head_dim(), Q = 3 * H;
    const int nh = int(c_.heads);
    Bk& bk = this->bk_;
    Layer& Lw = layers_[size_t(l)];
    const LoraScratch<Bk>& ws = this->lora_ws_;
    // LoRA activations were saved in forward order qkv, dense, fc1, fc2; find each block's start.
    const size_t li_qkv = 0, li_dense = li_qkv + Lw.qkv.loras.size(), li_fc1 = li_dense + Lw.dense.loras.size(),
                 li_fc2 = li_fc1 + Lw.fc1.loras.size();
    size_t li;
    // MLP
    bk.zero(dh_, size_t(N * I) * sizeof(T));
    li = li_fc2;
    linear_backward(bk, Lw.fc2, dh_, dx, L.h, N, L.lora, li, step, ws);
    bk.zero(dfc_, size_t(N * I) * sizeof(T));
    bk.gelu_backward(dfc_, dh_, L.fc, N * I);
    bk.zero(dln_, size_t(N * H) * sizeof(T));
    li = li_fc1;
    linear_backward(bk, Lw.fc1, dln_, dfc_, L.ln2, N, L.lora, li, step, ws);
    norm_bwd(Lw.ln2, dx, dln_, L.x_mid, L.mean2, L.rstd2, N);
    // attention
    bk.zero(datty_, size_t(N * H) * sizeof(T));
    li = li_dense;
    linear_backward(bk, Lw.dense, datty_, dx, L.atty, N, L.lora, li, step, ws);
    bk.zero(dqkv_, size_t(N * Q) * sizeof(T));
    bk.alibi_attention_backward(dqkv_, dqkv_ + hd, dqkv_ + 2 * hd, datty_, L.atty, L.att, L.qkv, Q, 3 * hd, L.qkv + hd,
                                L.qkv + 2 * hd, Q, 3 * hd, slopes_, B, T_, T_, 0, nh, int(hd));
    bk.zero(dln_, size_t(N * H) * sizeof(T));
    li = li_qkv;
    linear_backward(bk, Lw.qkv, dln_, dqkv_, L.ln1, N, L.lora, li, step, ws);
    norm_bwd(Lw.ln1, dx, dln_, L.x_in, L.mean1, L.rstd1, N);
  }

  ModelConfig c_;
  Param<Bk>* embed_ = nullptr;
  Norm embed_ln_{}, lnf_{};
  Param<Bk>* head_ = nullptr;
  std::vector<Layer> layers_;
  bool slopes_set_ = false;
  // Planned buffers: derived constants, the embedding and final norms' state, backward's scratch.
  G* slopes_ = nullptr;
  T* emb_ = nullptr;
  G *meane_ = nullptr, *rstde_ = nullptr, *meanf_ = nullptr, *rstdf_ = nullptr;
  T *dh_ = nullptr, *dfc_ = nullptr, *dln_ = nullptr, *datty_ = nullptr, *dqkv_ = nullptr, *demb_ = nullptr;
};

}  // namespace sft::model
