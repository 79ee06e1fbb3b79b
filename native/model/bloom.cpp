// Bloom: parameters, LoRA, forward, backward, KV cache. See bloom.h for the layout; the pieces
// every family shares (parameters, LoRA linears, AdamW) are in store.h.
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
#include "model/bloom.h"

#include <cstring>

#include "model/store.h"

namespace sft {

namespace {

using store::Linear;
using store::LoraActs;
using store::Param;
using store::resize;

template <typename T>
struct Norm {
  Param<T>* w;
  Param<T>* b;
};

template <typename T>
struct Layer {
  Norm<T> ln1, ln2;
  Linear<T> qkv, dense, fc1, fc2;  // fc1 = dense_h_to_4h, fc2 = dense_4h_to_h
};

template <typename T>
struct LayerActs {
  std::vector<T> x_in, ln1, mean1, rstd1, qkv, att, atty, x_mid, ln2, mean2, rstd2, fc, h;
  std::vector<LoraActs<T>> lora;  // indexed like the layer's loras in order qkv, dense, fc1, fc2
};

template <typename T>
struct Acts {
  int64_t B = 0, T_ = 0, step = 0;
  int64_t nv = 0;  // virtual (prompt-tuning) positions at the start of each row; T_ includes them
  bool checkpointed = false;  // gradient checkpointing: layers[l] holds x_in only, `scratch` the rest
  std::vector<T> emb, meane, rstde;
  std::vector<LayerActs<T>> layers;
  LayerActs<T> scratch;
  std::vector<T> x_out, lnf, meanf, rstdf, logits;
};

template <typename T>
class BloomModel final : public store::Family<T, BloomModel<T>> {
  friend class store::Family<T, BloomModel<T>>;
  using Base = store::ParamStore<T>;
  using Mode = typename Base::Mode;
  using Base::linear_fwd;
  using Base::linear_bwd;

 public:
  explicit BloomModel(const ModelConfig& c) : c_(c) {
    c_.validate();
    if (c.arch != Arch::Bloom) throw std::runtime_error("BloomModel built for another architecture");
    if (c.kv_heads != c.heads) throw std::runtime_error("invalid model config: bloom has one k/v head per attention head");
    if (c.norm_head) throw std::runtime_error("invalid model config: bloom has no NormHead");
    const int64_t H = c.hidden, I = c.intermediate, V = c.vocab;
    this->optional_prefix_ = "transformer.";
    embed_ = this->add_tensor("transformer.word_embeddings.weight", {V, H});
    embed_ln_ = add_norm("transformer.word_embeddings_layernorm");
    for (int64_t l = 0; l < c.layers; l++) {
      const std::string p = "transformer.h." + std::to_string(l) + ".";
      Layer<T> L;
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
    slopes_.resize(size_t(c.heads));
    cpu::alibi_slopes<T>(slopes_.data(), int(c.heads));
  }

  const ModelConfig& config() const override { return c_; }

  void set_gradient_checkpointing(bool on) override { this->checkpointing_ = on; }

  std::vector<ParamInfo> add_lora(const LoraOptions& o) override {
    Base::check_lora_options(o);
    static const char* known[] = {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"};
    for (const auto& t : o.targets) {
      if (std::find(std::begin(known), std::end(known), t) != std::end(known)) continue;
      if (t == "q_proj" || t == "k_proj" || t == "v_proj" || t == "W_pack")
        throw std::runtime_error("LoRA target \"" + t + "\" does not exist in Bloom models: their q, k and v are fused in \"query_key_value\"");
      throw std::runtime_error("unknown LoRA target module \"" + t +
                               "\" (this model's linear layers: query_key_value, dense, dense_h_to_4h, dense_4h_to_h)");
    }
    std::vector<ParamInfo> added;
    for (int64_t l = 0; l < c_.layers; l++) {
      Layer<T>& L = layers_[l];
      const std::string p = "transformer.h." + std::to_string(l) + ".";
      for (const auto& t : o.targets) {
        // PEFT matches a target by the module path's last component: "dense" is only the attention's.
        if (t == "query_key_value") this->attach_lora(L.qkv, p + "self_attention.query_key_value", 0, L.qkv.out, o, added);
        else if (t == "dense") this->attach_lora(L.dense, p + "self_attention.dense", 0, L.dense.out, o, added);
        else if (t == "dense_h_to_4h") this->attach_lora(L.fc1, p + "mlp.dense_h_to_4h", 0, L.fc1.out, o, added);
        else this->attach_lora(L.fc2, p + "mlp.dense_4h_to_h", 0, L.fc2.out, o, added);
      }
    }
    return added;
  }

  void merge_lora() override {
    this->merge_linears(linears());
    train_ = Acts<T>(), eval_ = Acts<T>(), gen_ = Acts<T>();  // LoRA activation slots are gone
  }

  std::pair<int64_t, int64_t> quantize_nf4(bool double_quant) override {
    return this->quantize_linears(linears(), double_quant);
  }

 private:
  Norm<T> add_norm(const std::string& prefix) {
    const int64_t H = c_.hidden;
    return {this->add_tensor(prefix + ".weight", {H}, false), this->add_tensor(prefix + ".bias", {H}, false)};
  }

  void norm_fwd(const Norm<T>& n, T* y, T* mean, T* rstd, const T* x, int64_t N) {
    cpu::layernorm_forward<T>(y, mean, rstd, x, n.w->w.data(), n.b->w.data(), N, c_.hidden, c_.norm_eps);
  }
  // dx += layernorm_bwd(dy); weight/bias grads when trainable.
  void norm_bwd(const Norm<T>& n, T* dx, const T* dy, const T* x, const T* mean, const T* rstd, int64_t N) {
    cpu::layernorm_backward<T>(dx, n.w->trainable ? n.w->g.data() : nullptr, n.b->trainable ? n.b->g.data() : nullptr,
                               dy, x, n.w->w.data(), mean, rstd, N, c_.hidden);
  }

  Param<T>* head() const { return c_.tie_embeddings ? embed_ : head_; }

  std::vector<Linear<T>*> linears() {
    std::vector<Linear<T>*> lins;
    for (Layer<T>& L : layers_)
      for (Linear<T>* lin : {&L.qkv, &L.dense, &L.fc1, &L.fc2}) lins.push_back(lin);
    return lins;
  }

  void alloc_acts(Acts<T>& a, int64_t B, int64_t T_, Mode mode) {
    const int64_t N = B * T_, H = c_.hidden, I = c_.intermediate;
    a.B = B;
    a.T_ = T_;
    a.checkpointed = mode == Mode::Train && this->checkpointing_;
    resize(a.emb, N * H), resize(a.meane, N), resize(a.rstde, N);
    auto full = [&](LayerActs<T>& L) {
      resize(L.x_in, N * H), resize(L.ln1, N * H), resize(L.mean1, N), resize(L.rstd1, N), resize(L.qkv, N * 3 * H);
      resize(L.att, mode == Mode::Train ? B * c_.heads * T_ * T_ : 0);
      resize(L.atty, N * H), resize(L.x_mid, N * H), resize(L.ln2, N * H), resize(L.mean2, N), resize(L.rstd2, N);
      resize(L.fc, N * I), resize(L.h, N * I);
    };
    a.layers.resize(size_t(c_.layers));
    for (auto& L : a.layers) {
      if (a.checkpointed) L = LayerActs<T>(), resize(L.x_in, N * H);
      else full(L);
    }
    if (a.checkpointed) full(a.scratch);
    else a.scratch = LayerActs<T>();
    resize(a.x_out, N * H), resize(a.lnf, N * H), resize(a.meanf, N), resize(a.rstdf, N);
    resize(a.logits, (mode == Mode::Cached ? 1 : N) * c_.vocab);
  }

  void forward(const int32_t* ids, int64_t B, int64_t Tu, Acts<T>& a, Mode mode, int64_t step) {
    // Prompt tuning prepends the virtual tokens (before the embedding LayerNorm, as PEFT feeds them
    // in as inputs_embeds); in cached generation only with the first feed.
    const int64_t nv = this->virtual_tokens(mode);
    const int64_t T_ = Tu + nv;  // internal sequence length
    const int64_t N = B * T_, H = c_.hidden;
    const int64_t p0 = mode == Mode::Cached ? this->cache_len_ : 0;
    if (mode == Mode::Cached && B != 1) throw std::runtime_error("the KV cache holds one sequence (batch 1)");
    alloc_acts(a, B, T_, mode);
    a.step = step;
    a.nv = nv;
    if (mode == Mode::Cached) this->ensure_cache(c_.layers, p0 + T_, H);

    std::vector<T> x(size_t(N * H));
    this->embed_rows(a.emb.data(), ids, embed_->w.data(), B, Tu, nv, H);
    norm_fwd(embed_ln_, x.data(), a.meane.data(), a.rstde.data(), a.emb.data(), N);
    for (int64_t l = 0; l < c_.layers; l++) {
      // With checkpointing only the layer's input is kept; backward recomputes the rest.
      LayerActs<T>& L = a.checkpointed ? a.scratch : a.layers[l];
      if (a.checkpointed) std::copy(x.begin(), x.end(), a.layers[l].x_in.begin());
      layer_forward(l, x.data(), L, B, T_, p0, mode, step);
    }
    std::copy(x.begin(), x.end(), a.x_out.begin());
    norm_fwd(lnf_, a.lnf.data(), a.meanf.data(), a.rstdf.data(), a.x_out.data(), N);
    const T* W = head()->w.data();
    if (mode == Mode::Cached) {
      cpu::linear_forward<T>(a.logits.data(), a.lnf.data() + (N - 1) * H, W, nullptr, 1, H, c_.vocab);
      this->cache_len_ = p0 + T_;
    } else {
      cpu::linear_forward<T>(a.logits.data(), a.lnf.data(), W, nullptr, N, H, c_.vocab);
    }
  }

  // One decoder layer: x [B*T_, H] is the residual stream (input, then output); L receives the
  // activations backward needs.
  void layer_forward(int64_t l, T* x, LayerActs<T>& L, int64_t B, int64_t T_, int64_t p0, Mode mode, int64_t step) {
    const int64_t N = B * T_, H = c_.hidden, I = c_.intermediate, hd = c_.head_dim(), Q = 3 * H;
    const int nh = int(c_.heads);
    Layer<T>& Lw = layers_[l];
    size_t li = 0;
    std::copy(x, x + N * H, L.x_in.begin());
    norm_fwd(Lw.ln1, L.ln1.data(), L.mean1.data(), L.rstd1.data(), L.x_in.data(), N);
    linear_fwd(Lw.qkv, L.qkv.data(), L.ln1.data(), N, L.lora, li, mode, step);
    if (mode == Mode::Cached) {
      T* kc = this->kcache_[l].data();
      T* vc = this->vcache_[l].data();
      for (int64_t t = 0; t < T_; t++)
        for (int64_t h = 0; h < nh; h++) {
          const T* src = L.qkv.data() + t * Q + h * 3 * hd;
          std::memcpy(kc + (p0 + t) * H + h * hd, src + hd, hd * sizeof(T));
          std::memcpy(vc + (p0 + t) * H + h * hd, src + 2 * hd, hd * sizeof(T));
        }
      cpu::alibi_attention_forward<T>(L.atty.data(), nullptr, L.qkv.data(), Q, 3 * hd, kc, vc, H, hd,
                                      slopes_.data(), 1, T_, p0 + T_, p0, nh, int(hd));
    } else {
      cpu::alibi_attention_forward<T>(L.atty.data(), mode == Mode::Train ? L.att.data() : nullptr, L.qkv.data(), Q,
                                      3 * hd, L.qkv.data() + hd, L.qkv.data() + 2 * hd, Q, 3 * hd, slopes_.data(),
                                      B, T_, T_, 0, nh, int(hd));
    }
    // residual: x_mid = x_in + atty Wd^T + b  (x already holds x_in)
    linear_fwd(Lw.dense, x, L.atty.data(), N, L.lora, li, mode, step, /*accumulate=*/true);
    std::copy(x, x + N * H, L.x_mid.begin());
    norm_fwd(Lw.ln2, L.ln2.data(), L.mean2.data(), L.rstd2.data(), L.x_mid.data(), N);
    linear_fwd(Lw.fc1, L.fc.data(), L.ln2.data(), N, L.lora, li, mode, step);
    cpu::gelu_tanh_forward<T>(L.h.data(), L.fc.data(), N * I);
    linear_fwd(Lw.fc2, x, L.h.data(), N, L.lora, li, mode, step, /*accumulate=*/true);
  }

  // a.logits holds dlogits (cross_entropy wrote them in place).
  void backward(const int32_t* ids, Acts<T>& a) {
    const int64_t B = a.B, T_ = a.T_, N = B * T_, H = c_.hidden, I = c_.intermediate, hd = c_.head_dim(), Q = 3 * H;
    const int nh = int(c_.heads);

    std::vector<T> dlnf(size_t(N * H), T(0));
    Param<T>* hp = head();
    cpu::linear_backward<T>(dlnf.data(), hp->trainable ? hp->g.data() : nullptr, nullptr, a.logits.data(), a.lnf.data(),
                            hp->w.data(), N, H, c_.vocab);
    std::vector<T> dx(size_t(N * H), T(0));
    norm_bwd(lnf_, dx.data(), dlnf.data(), a.x_out.data(), a.meanf.data(), a.rstdf.data(), N);

    std::vector<T> dh(size_t(N * I)), dfc(size_t(N * I)), dln(size_t(N * H)), datty(size_t(N * H)), dqkv(size_t(N * Q));
    for (int64_t l = c_.layers - 1; l >= 0; l--) {
      Layer<T>& Lw = layers_[l];
      LayerActs<T>& L = a.checkpointed ? a.scratch : a.layers[l];
      if (a.checkpointed) {  // recompute this layer's activations from its saved input (same dropout masks)
        std::vector<T> x(a.layers[l].x_in);
        layer_forward(l, x.data(), L, B, T_, 0, Mode::Train, a.step);
      }
      // LoRA activations were saved in forward order qkv, dense, fc1, fc2; find each block's start.
      const size_t li_qkv = 0, li_dense = li_qkv + Lw.qkv.loras.size(), li_fc1 = li_dense + Lw.dense.loras.size(),
                   li_fc2 = li_fc1 + Lw.fc1.loras.size();
      size_t li;
      // MLP
      std::fill(dh.begin(), dh.end(), T(0));
      li = li_fc2;
      linear_bwd(Lw.fc2, dh.data(), dx.data(), L.h.data(), N, L.lora, li, a.step);
      std::fill(dfc.begin(), dfc.end(), T(0));
      cpu::gelu_tanh_backward<T>(dfc.data(), dh.data(), L.fc.data(), N * I);
      std::fill(dln.begin(), dln.end(), T(0));
      li = li_fc1;
      linear_bwd(Lw.fc1, dln.data(), dfc.data(), L.ln2.data(), N, L.lora, li, a.step);
      norm_bwd(Lw.ln2, dx.data(), dln.data(), L.x_mid.data(), L.mean2.data(), L.rstd2.data(), N);
      // attention
      std::fill(datty.begin(), datty.end(), T(0));
      li = li_dense;
      linear_bwd(Lw.dense, datty.data(), dx.data(), L.atty.data(), N, L.lora, li, a.step);
      std::fill(dqkv.begin(), dqkv.end(), T(0));
      cpu::alibi_attention_backward<T>(dqkv.data(), dqkv.data() + hd, dqkv.data() + 2 * hd, datty.data(), L.att.data(),
                                       L.qkv.data(), Q, 3 * hd, L.qkv.data() + hd, L.qkv.data() + 2 * hd, Q, 3 * hd,
                                       B, T_, T_, 0, nh, int(hd));
      std::fill(dln.begin(), dln.end(), T(0));
      li = li_qkv;
      linear_bwd(Lw.qkv, dln.data(), dqkv.data(), L.ln1.data(), N, L.lora, li, a.step);
      norm_bwd(Lw.ln1, dx.data(), dln.data(), L.x_in.data(), L.mean1.data(), L.rstd1.data(), N);
    }
    if (embed_->trainable || a.nv || embed_ln_.w->trainable || embed_ln_.b->trainable) {
      std::vector<T> demb(size_t(N * H), T(0));
      norm_bwd(embed_ln_, demb.data(), dx.data(), a.emb.data(), a.meane.data(), a.rstde.data(), N);
      this->embed_rows_backward(embed_, demb.data(), ids, B, T_ - a.nv, a.nv, H);
    }
  }

  ModelConfig c_;
  Param<T>* embed_ = nullptr;
  Norm<T> embed_ln_{}, lnf_{};
  Param<T>* head_ = nullptr;
  std::vector<Layer<T>> layers_;
  std::vector<T> slopes_;
  Acts<T> train_, eval_, gen_;
};

}  // namespace

std::unique_ptr<ModelBase> make_bloom_model(const ModelConfig& cfg, bool f64) {
  if (f64) return std::make_unique<BloomModel<double>>(cfg);
  return std::make_unique<BloomModel<float>>(cfg);
}

}  // namespace sft
