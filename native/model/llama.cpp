// Llama-family model: parameters, LoRA, forward, backward, AdamW, KV cache. See llama.h.
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
#include "model/llama.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <stdexcept>

#include "core/threads.h"
#include "cpu/gemm.h"
#include "cpu/ops.h"
#include "cpu/quant.h"
#include "model/store.h"

namespace sft {

namespace {

using store::Linear;
using store::LoraActs;
using store::Param;
using store::resize;

template <typename T>
struct Layer {
  Param<T>* ln1;
  Param<T>* ln2;
  Linear<T> qkv, o, gate, up, down;
};

template <typename T>
struct LayerActs {
  std::vector<T> x_in, ln1, rstd1, qkv, att, atty, x_mid, ln2, rstd2, gate, up, h;
  std::vector<LoraActs<T>> lora;  // indexed like the layer's loras in order qkv, o, gate, up, down
};

template <typename T>
struct Acts {
  int64_t B = 0, T_ = 0, step = 0;
  int64_t nv = 0;  // virtual (prompt-tuning) positions at the start of each row; T_ includes them
  bool checkpointed = false;  // gradient checkpointing: layers[l] holds x_in only, `scratch` the rest
  std::vector<LayerActs<T>> layers;
  LayerActs<T> scratch;
  std::vector<T> x_out, lnf, rstdf, logits;
};

// Parameters, LoRA plumbing, gradients, AdamW and the cache bookkeeping come from ParamStore
// (model/store.h); this class declares the Llama family's parameters and computes it.
template <typename T>
class LlamaModel final : public store::Family<T, LlamaModel<T>> {
  friend class store::Family<T, LlamaModel<T>>;
  using Base = store::ParamStore<T>;
  using typename Base::Mode;
  using Base::add_param;
  using Base::view;
  using Base::linear_fwd;
  using Base::linear_bwd;
  using Base::cache_len_;

 public:
  explicit LlamaModel(const ModelConfig& c) : c_(c) {
    c_.validate();
    const int64_t H = c.hidden, I = c.intermediate, V = c.vocab, hd = c.head_dim();
    const int64_t qdim = c.heads * hd, kvdim = c.kv_heads * hd;
    embed_ = this->add_tensor("model.embed_tokens.weight", {V, H});
    for (int64_t l = 0; l < c.layers; l++) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      Layer<T> L;
      L.ln1 = this->add_tensor(p + "input_layernorm.weight", {H}, false);
      // The fused q/k/v matrix has an internal name; the checkpoint's names are views of its rows.
      L.qkv.in = H, L.qkv.out = c.qkv_dim();
      L.qkv.W = add_param(p + "self_attn.qkv.weight", {c.qkv_dim(), H});
      if (c.qkv_bias) L.qkv.b = add_param(p + "self_attn.qkv.bias", {c.qkv_dim()}, false);
      if (c.arch == Arch::Baichuan || c.arch == Arch::Baichuan2) {
        view(p + "self_attn.W_pack.weight", L.qkv.W, 0, c.qkv_dim(), H, {c.qkv_dim(), H});
      } else {
        view(p + "self_attn.q_proj.weight", L.qkv.W, 0, qdim, H, {qdim, H});
        view(p + "self_attn.k_proj.weight", L.qkv.W, qdim, kvdim, H, {kvdim, H});
        view(p + "self_attn.v_proj.weight", L.qkv.W, qdim + kvdim, kvdim, H, {kvdim, H});
        if (c.qkv_bias) {
          view(p + "self_attn.q_proj.bias", L.qkv.b, 0, qdim, 1, {qdim});
          view(p + "self_attn.k_proj.bias", L.qkv.b, qdim, kvdim, 1, {kvdim});
          view(p + "self_attn.v_proj.bias", L.qkv.b, qdim + kvdim, kvdim, 1, {kvdim});
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

  const ModelConfig& config() const override { return c_; }

  void set_gradient_checkpointing(bool on) override { this->checkpointing_ = on; }

  std::vector<ParamInfo> add_lora(const LoraOptions& o) override {
    Base::check_lora_options(o);
    const bool baichuan = c_.arch == Arch::Baichuan || c_.arch == Arch::Baichuan2;
    const int64_t hd = c_.head_dim(), qdim = c_.heads * hd, kvdim = c_.kv_heads * hd;
    std::vector<ParamInfo> added;
    for (const auto& t : o.targets) {
      static const char* known[] = {"q_proj", "k_proj", "v_proj", "W_pack", "o_proj", "gate_proj", "up_proj", "down_proj"};
      if (std::find(std::begin(known), std::end(known), t) == std::end(known))
        throw std::runtime_error("unknown LoRA target module \"" + t + "\" (this model's linear layers: " +
                                 std::string(baichuan ? "W_pack" : "q_proj, k_proj, v_proj") +
                                 ", o_proj, gate_proj, up_proj, down_proj)");
      if (baichuan && (t == "q_proj" || t == "k_proj" || t == "v_proj"))
        throw std::runtime_error("LoRA target \"" + t + "\" does not exist in Baichuan models: their q, k and v are fused in \"W_pack\"");
      if (!baichuan && t == "W_pack")
        throw std::runtime_error("LoRA target \"W_pack\" exists only in Baichuan models; use q_proj, k_proj, v_proj");
    }
    for (int64_t l = 0; l < c_.layers; l++) {
      Layer<T>& L = layers_[l];
      const std::string p = "model.layers." + std::to_string(l) + ".";
      for (const auto& t : o.targets) {
        Linear<T>* lin = nullptr;
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
    return added;
  }

  void merge_lora() override {
    this->merge_linears(linears());
    train_ = Acts<T>(), eval_ = Acts<T>(), gen_ = Acts<T>();  // LoRA activation slots are gone
  }

  // One NF4 tensor per checkpoint tensor of each matrix (q_proj, k_proj, v_proj separately; W_pack
  // whole), so blocks and double-quant offsets match bitsandbytes'.
  std::pair<int64_t, int64_t> quantize_nf4(bool double_quant) override { return this->quantize_linears(linears(), double_quant); }

 private:
  // Every linear layer (the ones LoRA, NF4 and merging act on).
  std::vector<Linear<T>*> linears() {
    std::vector<Linear<T>*> out;
    for (Layer<T>& L : layers_)
      for (Linear<T>* lin : {&L.qkv, &L.o, &L.gate, &L.up, &L.down}) out.push_back(lin);
    return out;
  }

  void weights_changed() override { head_dirty_ = true; }

  // cos/sin tables [positions, hd/2], computed as transformers does in fp32 (inv_freq, angle).
  void ensure_rope(int64_t positions) {
    if (rope_positions_ >= positions) return;
    const int64_t hd = c_.head_dim(), half = hd / 2;
    int64_t n = std::max<int64_t>(positions, std::max<int64_t>(2 * rope_positions_, 256));
    cos_.assign(size_t(n * half), T(0));
    sin_.assign(size_t(n * half), T(0));
    for (int64_t i = 0; i < half; i++) {
      if (std::is_same<T, float>::value) {
        const float inv = 1.0f / std::pow(float(c_.rope_theta), float(2 * i) / float(hd));
        for (int64_t pos = 0; pos < n; pos++) {
          const float ang = float(pos) * inv;
          cos_[pos * half + i] = T(std::cos(double(ang)));
          sin_[pos * half + i] = T(std::sin(double(ang)));
        }
      } else {
        const double inv = 1.0 / std::pow(c_.rope_theta, double(2 * i) / double(hd));
        for (int64_t pos = 0; pos < n; pos++) {
          cos_[pos * half + i] = T(std::cos(double(pos) * inv));
          sin_[pos * half + i] = T(std::sin(double(pos) * inv));
        }
      }
    }
    rope_positions_ = n;
  }

  // The output matrix actually used by lm_head: the embedding when tied, rows L2-normalised
  // for Baichuan2's NormHead (recomputed only after the weights change).
  const T* head_weights() {
    Param<T>* h = c_.tie_embeddings ? embed_ : head_;
    if (!c_.norm_head) return h->w.data();
    if (head_dirty_ || head_norm_.size() != h->w.size()) {
      head_norm_.resize(h->w.size());
      cpu::l2norm_rows_forward<T>(head_norm_.data(), h->w.data(), c_.vocab, c_.hidden, 1e-12);
      head_dirty_ = false;
    }
    return head_norm_.data();
  }

  void alloc_acts(Acts<T>& a, int64_t B, int64_t T_, Mode mode) {
    const int64_t N = B * T_, H = c_.hidden, I = c_.intermediate, Q = c_.qkv_dim(), qdim = c_.heads * c_.head_dim();
    a.B = B;
    a.T_ = T_;
    a.checkpointed = mode == Mode::Train && this->checkpointing_;
    auto full = [&](LayerActs<T>& L) {
      resize(L.x_in, N * H), resize(L.ln1, N * H), resize(L.rstd1, N), resize(L.qkv, N * Q);
      resize(L.att, mode == Mode::Train ? B * c_.heads * T_ * T_ : 0);
      resize(L.atty, N * qdim), resize(L.x_mid, N * H), resize(L.ln2, N * H), resize(L.rstd2, N);
      resize(L.gate, N * I), resize(L.up, N * I), resize(L.h, N * I);
    };
    a.layers.resize(size_t(c_.layers));
    for (int64_t l = 0; l < c_.layers; l++) {
      if (a.checkpointed) a.layers[l] = LayerActs<T>(), resize(a.layers[l].x_in, N * H);
      else full(a.layers[l]);
    }
    if (a.checkpointed) full(a.scratch);
    else a.scratch = LayerActs<T>();
    resize(a.x_out, N * H), resize(a.lnf, N * H), resize(a.rstdf, N);
    resize(a.logits, (mode == Mode::Cached ? 1 : N) * c_.vocab);
  }

  void forward(const int32_t* ids, int64_t B, int64_t Tu, Acts<T>& a, Mode mode, int64_t step) {
    // Prompt tuning prepends the virtual tokens to every row (in cached generation: once, at the start).
    const int64_t nv = this->virtual_tokens(mode);
    const int64_t T_ = Tu + nv;  // internal sequence length
    const int64_t N = B * T_, H = c_.hidden, kvdim = c_.kv_heads * c_.head_dim();
    const int64_t p0 = mode == Mode::Cached ? cache_len_ : 0;
    if (mode == Mode::Cached && B != 1) throw std::runtime_error("the KV cache holds one sequence (batch 1)");
    ensure_rope(p0 + T_);
    alloc_acts(a, B, T_, mode);
    a.step = step;
    a.nv = nv;
    if (mode == Mode::Cached) this->ensure_cache(c_.layers, p0 + T_, kvdim);

    std::vector<T> x(size_t(N * H));
    this->embed_rows(x.data(), ids, embed_->w.data(), B, Tu, nv, H);
    for (int64_t l = 0; l < c_.layers; l++) {
      // With checkpointing only the layer's input is kept; backward recomputes the rest.
      LayerActs<T>& L = a.checkpointed ? a.scratch : a.layers[l];
      if (a.checkpointed) std::copy(x.begin(), x.end(), a.layers[l].x_in.begin());
      layer_forward(l, x.data(), L, B, T_, p0, mode, step);
    }
    std::copy(x.begin(), x.end(), a.x_out.begin());
    cpu::rmsnorm_forward<T>(a.lnf.data(), a.rstdf.data(), a.x_out.data(), norm_->w.data(), N, H, c_.norm_eps);
    const T* W = head_weights();
    if (mode == Mode::Cached) {
      cpu::linear_forward<T>(a.logits.data(), a.lnf.data() + (N - 1) * H, W, nullptr, 1, H, c_.vocab);
      cache_len_ = p0 + T_;
    } else {
      cpu::linear_forward<T>(a.logits.data(), a.lnf.data(), W, nullptr, N, H, c_.vocab);
    }
  }

  // One decoder layer: x [B*T_, H] is the residual stream (input, then output); L receives the
  // activations backward needs.
  void layer_forward(int64_t l, T* x, LayerActs<T>& L, int64_t B, int64_t T_, int64_t p0, Mode mode, int64_t step) {
    const int64_t N = B * T_, H = c_.hidden, I = c_.intermediate, hd = c_.head_dim();
    const int64_t Q = c_.qkv_dim(), qdim = c_.heads * hd, kvdim = c_.kv_heads * hd;
    const int nh = int(c_.heads), nkv = int(c_.kv_heads);
    Layer<T>& Lw = layers_[l];
    size_t li = 0;
    std::copy(x, x + N * H, L.x_in.begin());
    cpu::rmsnorm_forward<T>(L.ln1.data(), L.rstd1.data(), L.x_in.data(), Lw.ln1->w.data(), N, H, c_.norm_eps);
    linear_fwd(Lw.qkv, L.qkv.data(), L.ln1.data(), N, L.lora, li, mode, step);
    cpu::rope_forward<T>(L.qkv.data(), Q, N, T_, p0, nh, int(hd), cos_.data(), sin_.data());
    cpu::rope_forward<T>(L.qkv.data() + qdim, Q, N, T_, p0, nkv, int(hd), cos_.data(), sin_.data());
    if (mode == Mode::Cached) {
      T* kc = this->kcache_[l].data();
      T* vc = this->vcache_[l].data();
      for (int64_t t = 0; t < T_; t++) {
        std::memcpy(kc + (p0 + t) * kvdim, L.qkv.data() + t * Q + qdim, kvdim * sizeof(T));
        std::memcpy(vc + (p0 + t) * kvdim, L.qkv.data() + t * Q + qdim + kvdim, kvdim * sizeof(T));
      }
      cpu::attention_forward<T>(L.atty.data(), nullptr, L.qkv.data(), Q, kc, vc, kvdim, 1, T_, p0 + T_, p0, nh,
                                nkv, int(hd));
    } else {
      cpu::attention_forward<T>(L.atty.data(), mode == Mode::Train ? L.att.data() : nullptr, L.qkv.data(), Q,
                                L.qkv.data() + qdim, L.qkv.data() + qdim + kvdim, Q, B, T_, T_, 0, nh, nkv, int(hd));
    }
    // residual: x_mid = x_in + atty Wo^T  (x already holds x_in)
    linear_fwd(Lw.o, x, L.atty.data(), N, L.lora, li, mode, step, /*accumulate=*/true);
    std::copy(x, x + N * H, L.x_mid.begin());
    cpu::rmsnorm_forward<T>(L.ln2.data(), L.rstd2.data(), L.x_mid.data(), Lw.ln2->w.data(), N, H, c_.norm_eps);
    linear_fwd(Lw.gate, L.gate.data(), L.ln2.data(), N, L.lora, li, mode, step);
    linear_fwd(Lw.up, L.up.data(), L.ln2.data(), N, L.lora, li, mode, step);
    cpu::swiglu_forward<T>(L.h.data(), L.gate.data(), L.up.data(), N * I);
    linear_fwd(Lw.down, x, L.h.data(), N, L.lora, li, mode, step, /*accumulate=*/true);
  }

  // a.logits holds dlogits (cross_entropy wrote them in place).
  void backward(const int32_t* ids, Acts<T>& a) {
    const int64_t B = a.B, T_ = a.T_, N = B * T_, H = c_.hidden, I = c_.intermediate, hd = c_.head_dim();
    const int64_t Q = c_.qkv_dim(), qdim = c_.heads * hd, kvdim = c_.kv_heads * hd;
    const int nh = int(c_.heads), nkv = int(c_.kv_heads);

    std::vector<T> dlnf(size_t(N * H), T(0));
    Param<T>* head = c_.tie_embeddings ? embed_ : head_;
    const T* W = head_weights();
    if (head->trainable && c_.norm_head) {
      std::vector<T> dWn(head->w.size(), T(0));
      cpu::linear_backward<T>(dlnf.data(), dWn.data(), nullptr, a.logits.data(), a.lnf.data(), W, N, H, c_.vocab);
      cpu::l2norm_rows_backward<T>(head->g.data(), dWn.data(), head->w.data(), c_.vocab, H, 1e-12);
    } else {
      cpu::linear_backward<T>(dlnf.data(), head->trainable ? head->g.data() : nullptr, nullptr, a.logits.data(),
                              a.lnf.data(), W, N, H, c_.vocab);
    }
    std::vector<T> dx(size_t(N * H), T(0));
    cpu::rmsnorm_backward<T>(dx.data(), norm_->trainable ? norm_->g.data() : nullptr, dlnf.data(), a.x_out.data(),
                             norm_->w.data(), a.rstdf.data(), N, H);

    std::vector<T> dh(size_t(N * I)), dgate(size_t(N * I)), dup(size_t(N * I)), dln(size_t(N * H)),
        datty(size_t(N * qdim)), dqkv(size_t(N * Q));
    for (int64_t l = c_.layers - 1; l >= 0; l--) {
      Layer<T>& Lw = layers_[l];
      LayerActs<T>& L = a.checkpointed ? a.scratch : a.layers[l];
      if (a.checkpointed) {  // recompute this layer's activations from its saved input (same dropout masks)
        std::vector<T> x(a.layers[l].x_in);
        layer_forward(l, x.data(), L, B, T_, 0, Mode::Train, a.step);
      }
      // LoRA activations were saved in forward order qkv, o, gate, up, down; find each block's start.
      const size_t li_qkv = 0, li_o = li_qkv + Lw.qkv.loras.size(), li_gate = li_o + Lw.o.loras.size(),
                   li_up = li_gate + Lw.gate.loras.size(), li_down = li_up + Lw.up.loras.size();
      size_t li;
      // MLP
      std::fill(dh.begin(), dh.end(), T(0));
      li = li_down;
      linear_bwd(Lw.down, dh.data(), dx.data(), L.h.data(), N, L.lora, li, a.step);
      std::fill(dgate.begin(), dgate.end(), T(0));
      std::fill(dup.begin(), dup.end(), T(0));
      cpu::swiglu_backward<T>(dgate.data(), dup.data(), dh.data(), L.gate.data(), L.up.data(), N * I);
      std::fill(dln.begin(), dln.end(), T(0));
      li = li_gate;
      linear_bwd(Lw.gate, dln.data(), dgate.data(), L.ln2.data(), N, L.lora, li, a.step);
      li = li_up;
      linear_bwd(Lw.up, dln.data(), dup.data(), L.ln2.data(), N, L.lora, li, a.step);
      cpu::rmsnorm_backward<T>(dx.data(), Lw.ln2->trainable ? Lw.ln2->g.data() : nullptr, dln.data(), L.x_mid.data(),
                               Lw.ln2->w.data(), L.rstd2.data(), N, H);
      // attention
      std::fill(datty.begin(), datty.end(), T(0));
      li = li_o;
      linear_bwd(Lw.o, datty.data(), dx.data(), L.atty.data(), N, L.lora, li, a.step);
      std::fill(dqkv.begin(), dqkv.end(), T(0));
      cpu::attention_backward<T>(dqkv.data(), dqkv.data() + qdim, dqkv.data() + qdim + kvdim, datty.data(),
                                 L.att.data(), L.qkv.data(), Q, L.qkv.data() + qdim, L.qkv.data() + qdim + kvdim, Q,
                                 B, T_, T_, 0, nh, nkv, int(hd));
      cpu::rope_backward<T>(dqkv.data(), Q, N, T_, 0, nh, int(hd), cos_.data(), sin_.data());
      cpu::rope_backward<T>(dqkv.data() + qdim, Q, N, T_, 0, nkv, int(hd), cos_.data(), sin_.data());
      std::fill(dln.begin(), dln.end(), T(0));
      li = li_qkv;
      linear_bwd(Lw.qkv, dln.data(), dqkv.data(), L.ln1.data(), N, L.lora, li, a.step);
      cpu::rmsnorm_backward<T>(dx.data(), Lw.ln1->trainable ? Lw.ln1->g.data() : nullptr, dln.data(), L.x_in.data(),
                               Lw.ln1->w.data(), L.rstd1.data(), N, H);
    }
    this->embed_rows_backward(embed_, dx.data(), ids, B, T_ - a.nv, a.nv, H);
  }

  ModelConfig c_;
  Param<T>* embed_ = nullptr;
  Param<T>* norm_ = nullptr;
  Param<T>* head_ = nullptr;
  std::vector<Layer<T>> layers_;
  std::vector<T> cos_, sin_, head_norm_;
  int64_t rope_positions_ = 0;
  bool head_dirty_ = true;
  Acts<T> train_, eval_, gen_;
};

}  // namespace

std::unique_ptr<ModelBase> make_llama_model(const ModelConfig& cfg, bool f64) {
  if (f64) return std::make_unique<LlamaModel<double>>(cfg);
  return std::make_unique<LlamaModel<float>>(cfg);
}

}  // namespace sft
