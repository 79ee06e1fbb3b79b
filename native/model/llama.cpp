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

namespace sft {

namespace {

template <typename T>
struct Param {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<T> w, g, m, v;
  bool trainable = false;
  bool decay = true;  // HF Trainer: no weight decay on biases and norm weights
  bool loaded = false;
  std::unique_ptr<cpu::Nf4Weight> q;  // QLoRA: the weight lives here, w is empty
  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

// A checkpoint tensor seen as a block of rows of an internal parameter (q_proj -> rows of qkv).
template <typename T>
struct View {
  Param<T>* p;
  int64_t row0, rows, cols;  // cols = 1 for vectors
  std::vector<int64_t> shape;
};

template <typename T>
struct Lora {
  std::string module;  // PEFT module path, e.g. model.layers.0.self_attn.q_proj
  Param<T>* A;         // [r, in]
  Param<T>* B;         // [rows, r]
  int64_t row0, rows;  // output rows of the linear it adapts
  T scale;
  double dropout;
  uint64_t seed;
};

template <typename T>
struct Linear {
  Param<T>* W = nullptr;  // [out, in]
  Param<T>* b = nullptr;  // [out] or null
  int64_t in = 0, out = 0;
  std::vector<Lora<T>> loras;
};

template <typename T>
struct Layer {
  Param<T>* ln1;
  Param<T>* ln2;
  Linear<T> qkv, o, gate, up, down;
};

// Saved per-LoRA activations: the (dropped-out) input and the rank-r intermediate.
template <typename T>
struct LoraActs {
  std::vector<T> xd, ha;
};

template <typename T>
struct LayerActs {
  std::vector<T> x_in, ln1, rstd1, qkv, att, atty, x_mid, ln2, rstd2, gate, up, h;
  std::vector<LoraActs<T>> lora;  // indexed like the layer's loras in order qkv, o, gate, up, down
};

template <typename T>
struct Acts {
  int64_t B = 0, T_ = 0, step = 0;
  std::vector<LayerActs<T>> layers;
  std::vector<T> x_out, lnf, rstdf, logits;
};

// Counter-based random numbers: the same (seed, stream, index) always gives the same value,
// whatever the thread layout. splitmix64 finaliser.
inline uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
inline double uniform01(uint64_t seed, uint64_t stream, uint64_t i) {
  return double(mix(mix(seed ^ mix(stream)) + i) >> 11) * (1.0 / 9007199254740992.0);
}

inline uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : s) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}

template <typename T>
void resize(std::vector<T>& v, int64_t n) {
  if (int64_t(v.size()) != n) v.assign(size_t(n), T(0));
}

template <typename T>
class LlamaModel final : public ModelBase {
 public:
  explicit LlamaModel(const ModelConfig& c) : c_(c) {
    c_.validate();
    const int64_t H = c.hidden, I = c.intermediate, V = c.vocab, hd = c.head_dim();
    const int64_t qdim = c.heads * hd, kvdim = c.kv_heads * hd;
    embed_ = add_param("model.embed_tokens.weight", {V, H});
    view(embed_->name, embed_, 0, V, H, {V, H});
    for (int64_t l = 0; l < c.layers; l++) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      Layer<T> L;
      L.ln1 = add_param(p + "input_layernorm.weight", {H}, false);
      view(L.ln1->name, L.ln1, 0, H, 1, {H});
      L.qkv = make_linear(p + "self_attn.qkv.weight", H, c.qkv_dim(), c.qkv_bias ? p + "self_attn.qkv.bias" : "");
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
      L.o = make_linear(p + "self_attn.o_proj.weight", qdim, H);
      L.ln2 = add_param(p + "post_attention_layernorm.weight", {H}, false);
      view(L.ln2->name, L.ln2, 0, H, 1, {H});
      L.gate = make_linear(p + "mlp.gate_proj.weight", H, I);
      L.up = make_linear(p + "mlp.up_proj.weight", H, I);
      L.down = make_linear(p + "mlp.down_proj.weight", I, H);
      for (Linear<T>* lin : {&L.o, &L.gate, &L.up, &L.down}) view(lin->W->name, lin->W, 0, lin->out, lin->in, {lin->out, lin->in});
      layers_.push_back(L);
    }
    norm_ = add_param("model.norm.weight", {H}, false);
    view(norm_->name, norm_, 0, H, 1, {H});
    if (!c.tie_embeddings) {
      head_ = add_param("lm_head.weight", {V, H});
      view(head_->name, head_, 0, V, H, {V, H});
    }
  }

  const ModelConfig& config() const override { return c_; }

  std::vector<ParamInfo> base_params() const override {
    std::vector<ParamInfo> out;
    for (const auto& name : view_order_) out.push_back({name, views_.at(name).shape});
    return out;
  }

  void load_tensor(const std::string& name, const void* data, DType dtype,
                   const std::vector<int64_t>& shape) override {
    auto it = views_.find(name);
    if (it == views_.end()) throw std::runtime_error("unexpected tensor \"" + name + "\": this model has no such weight");
    const View<T>& v = it->second;
    if (v.p->q) throw std::runtime_error("tensor \"" + name + "\" is already quantized; load weights before quantizing");
    if (shape != v.shape)
      throw std::runtime_error("tensor \"" + name + "\" has shape " + shape_str(shape) + ", expected " + shape_str(v.shape));
    T* dst = v.p->w.data() + v.row0 * v.cols;
    const int64_t n = v.rows * v.cols;
    parallel_for(n, 1 << 15, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; i++) dst[i] = T(element(data, dtype, i));
    });
    loaded_.insert({name, true});
    head_dirty_ = true;
  }

  std::vector<std::string> missing_tensors() const override {
    std::vector<std::string> out;
    for (const auto& name : view_order_)
      if (!loaded_.count(name)) out.push_back(name);
    return out;
  }

  std::vector<ParamInfo> add_lora(const LoraOptions& o) override {
    if (o.rank <= 0) throw std::runtime_error("lora_rank must be > 0");
    if (o.dropout < 0 || o.dropout >= 1) throw std::runtime_error("lora_dropout must be in [0, 1)");
    const bool baichuan = c_.arch == Arch::Baichuan || c_.arch == Arch::Baichuan2;
    const int64_t hd = c_.head_dim(), qdim = c_.heads * hd, kvdim = c_.kv_heads * hd;
    const T scale = T(o.use_rslora ? o.alpha / std::sqrt(double(o.rank)) : o.alpha / double(o.rank));
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
        for (const auto& existing : lin->loras)
          if (existing.module == mod) throw std::runtime_error("LoRA already attached to " + mod);
        Param<T>* A = add_param(mod + ".lora_A.weight", {o.rank, lin->in});
        Param<T>* Bp = add_param(mod + ".lora_B.weight", {rows, o.rank});
        // PEFT's init: A ~ kaiming_uniform(a = sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)); B = 0.
        const double bound = 1.0 / std::sqrt(double(lin->in));
        const uint64_t stream = fnv1a(A->name);
        for (int64_t i = 0; i < A->numel(); i++) A->w[i] = T((2 * uniform01(o.seed, stream, i) - 1) * bound);
        for (Param<T>* q : {A, Bp}) {
          q->trainable = true;
          q->g.assign(q->w.size(), T(0));
          lora_params_.push_back(q);
          added.push_back({q->name, q->shape});
        }
        lin->loras.push_back({mod, A, Bp, row0, rows, scale, o.dropout, o.seed ^ mix(stream + 1)});
      }
    }
    return added;
  }

  void merge_lora() override {
    for (Layer<T>& L : layers_) {
      for (Linear<T>* lin : {&L.qkv, &L.o, &L.gate, &L.up, &L.down}) {
        for (const Lora<T>& lo : lin->loras) {
          if (lin->W->q) throw std::runtime_error("cannot merge LoRA into NF4 weights: load the base in full precision to merge");
          const int64_t r = lo.A->shape[0];
          // W[row0 + i, :] += scale * sum_k B[i, k] A[k, :]
          cpu::gemm<T>(false, true, lo.rows, lin->in, r, lo.scale, lo.B->w.data(), r, lo.A->w.data(), lin->in, T(1),
                       lin->W->w.data() + lo.row0 * lin->in, lin->in);
          for (Param<T>* p : {lo.A, lo.B}) {
            by_name_.erase(p->name);
            lora_params_.erase(std::find(lora_params_.begin(), lora_params_.end(), p));
            p->trainable = false;
            std::vector<T>().swap(p->w), std::vector<T>().swap(p->g), std::vector<T>().swap(p->m), std::vector<T>().swap(p->v);
            p->shape = {0};
          }
        }
        lin->loras.clear();
      }
    }
    train_ = Acts<T>(), eval_ = Acts<T>(), gen_ = Acts<T>();  // LoRA activation slots are gone
  }

  std::pair<int64_t, int64_t> quantize_nf4(bool double_quant) override {
    int64_t before = 0, after = 0;
    for (Layer<T>& L : layers_) {
      for (Linear<T>* lin : {&L.qkv, &L.o, &L.gate, &L.up, &L.down}) {
        Param<T>* p = lin->W;
        if (p->q) continue;
        if (p->trainable) throw std::runtime_error("cannot quantize trainable weight " + p->name);
        auto q = std::make_unique<cpu::Nf4Weight>();
        q->rows = lin->out;
        q->cols = lin->in;
        // One NF4 tensor per checkpoint tensor covering this matrix (q_proj, k_proj, v_proj
        // separately; W_pack whole), so blocks and double-quant offsets match bitsandbytes'.
        for (const auto& name : view_order_) {
          const View<T>& v = views_.at(name);
          if (v.p != p) continue;
          std::vector<float> x(size_t(v.rows * v.cols));
          for (size_t i = 0; i < x.size(); i++) x[i] = float(p->w[size_t(v.row0 * v.cols) + i]);
          q->segments.push_back({v.row0, v.rows, cpu::nf4_quantize_tensor(x.data(), int64_t(x.size()), double_quant)});
        }
        before += p->numel() * int64_t(sizeof(T));
        after += int64_t(q->bytes());
        p->q = std::move(q);
        std::vector<T>().swap(p->w);  // free the full-precision copy
      }
    }
    return {before, after};
  }

  void set_base_trainable(bool trainable) override {
    for (auto& p : params_) {
      if (is_lora(p)) continue;
      if (trainable && p.q) throw std::runtime_error("quantized (bits 4) weights cannot be trained: full fine-tuning needs 16/32-bit weights");
      p.trainable = trainable;
      if (trainable) p.g.assign(p.w.size(), T(0));
      else p.g.clear();
    }
  }

  std::vector<ParamInfo> trainable_params() const override {
    std::vector<ParamInfo> out;
    for (const auto& p : params_)
      if (p.trainable) out.push_back({p.name, p.shape});
    return out;
  }

  std::vector<double> get_tensor(const std::string& name) const override {
    const auto [p, row0, n] = locate(name);
    if (p->q) {  // dequantized on request (tests, merging)
      const int64_t cols = p->q->cols;
      std::vector<float> row(static_cast<size_t>(cols));
      std::vector<double> out;
      out.reserve(size_t(n));
      for (int64_t r = row0 / cols; r < (row0 + n) / cols; r++) {
        p->q->decode_row(row.data(), r, 0, cols);
        out.insert(out.end(), row.begin(), row.end());
      }
      return out;
    }
    return std::vector<double>(p->w.begin() + row0, p->w.begin() + row0 + n);
  }

  std::vector<double> get_grad(const std::string& name) const override {
    const auto [p, row0, n] = locate(name);
    if (!p->trainable) throw std::runtime_error("tensor \"" + name + "\" is not trainable");
    return std::vector<double>(p->g.begin() + row0, p->g.begin() + row0 + n);
  }

  void set_tensor(const std::string& name, const double* data, int64_t n) override {
    const auto [p, row0, count] = locate(name);
    if (n != count) throw std::runtime_error("set_tensor \"" + name + "\": got " + std::to_string(n) + " values, expected " + std::to_string(count));
    if (p->q) throw std::runtime_error("set_tensor \"" + name + "\": the weight is NF4-quantized");
    for (int64_t i = 0; i < n; i++) p->w[row0 + i] = T(data[i]);
    if (views_.count(name)) loaded_.insert({name, true});
    head_dirty_ = true;
  }

  double forward_backward(const int32_t* ids, const int32_t* labels, int64_t B, int64_t T_, double scale,
                          int64_t step, int64_t* count) override {
    check_ids(ids, B * T_);
    forward(ids, B, T_, train_, Mode::Train, step);
    double loss = cpu::cross_entropy<T>(train_.logits.data(), labels, B * T_, c_.vocab, T(scale), true, count);
    backward(ids, train_);
    return loss;
  }

  double forward_loss(const int32_t* ids, const int32_t* labels, int64_t B, int64_t T_, int64_t step,
                      bool training, int64_t* count) override {
    check_ids(ids, B * T_);
    forward(ids, B, T_, eval_, training ? Mode::Train : Mode::Eval, step);
    return cpu::cross_entropy<T>(eval_.logits.data(), labels, B * T_, c_.vocab, T(1), false, count);
  }

  void zero_grad() override {
    for (auto& p : params_)
      if (p.trainable) std::fill(p.g.begin(), p.g.end(), T(0));
  }

  double grad_norm() const override {
    double ss = 0;
    for (const auto& p : params_)
      if (p.trainable)
        for (T g : p.g) ss += double(g) * double(g);
    return std::sqrt(ss);
  }

  int64_t optimizer_step() const override { return step_; }

  std::pair<std::vector<float>, std::vector<float>> get_moments(const std::string& name) const override {
    auto it = by_name_.find(name);
    if (it == by_name_.end() || !it->second->trainable) throw std::runtime_error("no trainable tensor named \"" + name + "\"");
    const Param<T>& p = *it->second;
    return {std::vector<float>(p.m.begin(), p.m.end()), std::vector<float>(p.v.begin(), p.v.end())};
  }

  void set_optimizer_state(int64_t step, const std::string& name, const float* m, const float* v, int64_t n) override {
    auto it = by_name_.find(name);
    if (it == by_name_.end() || !it->second->trainable) throw std::runtime_error("optimizer state for \"" + name + "\": no such trainable tensor");
    Param<T>& p = *it->second;
    if (n != 0 && n != p.numel()) throw std::runtime_error("optimizer state for \"" + name + "\" has " + std::to_string(n) + " values, expected " + std::to_string(p.numel()));
    p.m.assign(m, m + n);  // n == 0: no step taken yet (moments start at zero)
    p.v.assign(v, v + n);
    step_ = step;
  }

  double adamw_step(const AdamWOptions& o) override {
    const double norm = grad_norm();
    // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is < 1.
    double clip = 1.0;
    if (o.max_grad_norm > 0) clip = std::min(1.0, o.max_grad_norm / (norm + 1e-6));
    if (!std::isfinite(norm)) return norm;  // never write NaN/Inf into the weights; caller reports
    step_++;
    for (auto& p : params_) {
      if (!p.trainable) continue;
      if (p.m.size() != p.w.size()) p.m.assign(p.w.size(), T(0)), p.v.assign(p.w.size(), T(0));
      cpu::adamw_update<T>(p.w.data(), p.g.data(), p.m.data(), p.v.data(), p.numel(), o.lr, o.beta1, o.beta2,
                           o.eps, p.decay ? o.weight_decay : 0.0, step_, clip);
    }
    head_dirty_ = true;
    return norm;
  }

  std::vector<float> logits(const int32_t* ids, int64_t B, int64_t T_) override {
    check_ids(ids, B * T_);
    forward(ids, B, T_, eval_, Mode::Eval, 0);
    return std::vector<float>(eval_.logits.begin(), eval_.logits.end());
  }

  std::vector<float> feed(const int32_t* ids, int64_t n) override {
    if (n <= 0) throw std::runtime_error("feed: no tokens");
    check_ids(ids, n);
    forward(ids, 1, n, gen_, Mode::Cached, 0);
    return std::vector<float>(gen_.logits.begin(), gen_.logits.end());
  }

  void reset_cache() override { cache_len_ = 0; }
  void truncate_cache(int64_t n) override {
    if (n < 0 || n > cache_len_)
      throw std::runtime_error("truncateCache(" + std::to_string(n) + "): the cache holds " + std::to_string(cache_len_) + " tokens");
    cache_len_ = n;  // positions >= n are simply overwritten by the next feed
  }
  int64_t cache_length() const override { return cache_len_; }

 private:
  enum class Mode { Train, Eval, Cached };

  static std::string shape_str(const std::vector<int64_t>& s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); i++) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
  }

  Param<T>* add_param(const std::string& name, std::vector<int64_t> shape, bool decay = true) {
    params_.emplace_back();
    Param<T>& p = params_.back();
    p.name = name;
    p.shape = std::move(shape);
    p.decay = decay;
    p.w.assign(size_t(p.numel()), T(0));
    by_name_[name] = &p;
    return &p;
  }

  void view(const std::string& name, Param<T>* p, int64_t row0, int64_t rows, int64_t cols, std::vector<int64_t> shape) {
    views_[name] = View<T>{p, row0, rows, cols, std::move(shape)};
    view_order_.push_back(name);
  }

  Linear<T> make_linear(const std::string& wname, int64_t in, int64_t out, const std::string& bname = "") {
    Linear<T> lin;
    lin.in = in;
    lin.out = out;
    lin.W = add_param(wname, {out, in});
    if (!bname.empty()) lin.b = add_param(bname, {out}, false);
    return lin;
  }

  bool is_lora(const Param<T>& p) const { return std::find(lora_params_.begin(), lora_params_.end(), &p) != lora_params_.end(); }

  // A name is a checkpoint view (HF name) or an internal/LoRA parameter name.
  std::tuple<Param<T>*, int64_t, int64_t> locate(const std::string& name) const {
    auto v = views_.find(name);
    if (v != views_.end()) return {v->second.p, v->second.row0 * v->second.cols, v->second.rows * v->second.cols};
    auto p = by_name_.find(name);
    if (p != by_name_.end()) return {p->second, 0, p->second->numel()};
    throw std::runtime_error("no tensor named \"" + name + "\"");
  }

  void check_ids(const int32_t* ids, int64_t n) const {
    for (int64_t i = 0; i < n; i++)
      if (ids[i] < 0 || ids[i] >= c_.vocab)
        throw std::runtime_error("token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                                 " is outside the vocabulary (size " + std::to_string(c_.vocab) + ")");
  }

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
    a.layers.resize(size_t(c_.layers));
    for (int64_t l = 0; l < c_.layers; l++) {
      LayerActs<T>& L = a.layers[l];
      resize(L.x_in, N * H), resize(L.ln1, N * H), resize(L.rstd1, N), resize(L.qkv, N * Q);
      resize(L.att, mode == Mode::Train ? B * c_.heads * T_ * T_ : 0);
      resize(L.atty, N * qdim), resize(L.x_mid, N * H), resize(L.ln2, N * H), resize(L.rstd2, N);
      resize(L.gate, N * I), resize(L.up, N * I), resize(L.h, N * I);
    }
    resize(a.x_out, N * H), resize(a.lnf, N * H), resize(a.rstdf, N);
    resize(a.logits, (mode == Mode::Cached ? 1 : N) * c_.vocab);
  }

  // LoRA dropout: element i of this adapter's input at training step `step` is zeroed.
  static bool dropped(const Lora<T>& lo, int64_t step, int64_t i) {
    return uniform01(lo.seed, mix(uint64_t(step) * 0x100000001b3ull), uint64_t(i)) < lo.dropout;
  }

  // y[M, out] (+)= x W^T + b, plus each LoRA's scale * (drop(x) A^T) B^T on its rows.
  void linear_fwd(const Linear<T>& lin, T* y, const T* x, int64_t M, std::vector<LoraActs<T>>& la, size_t& li,
                  Mode mode, int64_t step, bool accumulate = false) {
    if (lin.W->q) {
      cpu::gemm_q4<T>(false, M, lin.out, lin.in, T(1), x, lin.in, *lin.W->q, accumulate ? T(1) : T(0), y, lin.out);
      if (lin.b) cpu::add_bias<T>(y, lin.b->w.data(), M, lin.out);
    } else {
      cpu::linear_forward<T>(y, x, lin.W->w.data(), lin.b ? lin.b->w.data() : nullptr, M, lin.in, lin.out, accumulate);
    }
    for (const Lora<T>& lo : lin.loras) {
      if (la.size() <= li) la.resize(li + 1);
      LoraActs<T>& s = la[li++];
      const int64_t r = lo.A->shape[0];
      const T* xin = x;
      if (mode == Mode::Train && lo.dropout > 0) {
        resize(s.xd, M * lin.in);
        const T keep = T(1.0 / (1.0 - lo.dropout));
        parallel_for(M, 16, [&](int64_t m0, int64_t m1) {
          for (int64_t i = m0 * lin.in; i < m1 * lin.in; i++) s.xd[i] = dropped(lo, step, i) ? T(0) : x[i] * keep;
        });
        xin = s.xd.data();
      } else {
        s.xd.clear();
      }
      resize(s.ha, M * r);
      cpu::gemm_nt<T>(M, r, lin.in, T(1), xin, lin.in, lo.A->w.data(), lin.in, T(0), s.ha.data(), r);
      cpu::gemm_nt<T>(M, lo.rows, r, lo.scale, s.ha.data(), r, lo.B->w.data(), r, T(1), y + lo.row0, lin.out);
    }
  }

  // Mirror of linear_fwd: dx[M, in] += dy W (+ LoRA path); weight/bias/LoRA grads when trainable.
  void linear_bwd(const Linear<T>& lin, T* dx, const T* dy, const T* x, int64_t M, std::vector<LoraActs<T>>& la,
                  size_t& li, int64_t step) {
    if (lin.W->q) {  // frozen NF4 base: only the input gradient, decoded tile by tile
      cpu::gemm_q4<T>(true, M, lin.in, lin.out, T(1), dy, lin.out, *lin.W->q, T(1), dx, lin.in);
      if (lin.b && lin.b->trainable)
        cpu::linear_backward<T>(nullptr, nullptr, lin.b->g.data(), dy, x, nullptr, M, lin.in, lin.out);
    } else {
      cpu::linear_backward<T>(dx, lin.W->trainable ? lin.W->g.data() : nullptr,
                              lin.b && lin.b->trainable ? lin.b->g.data() : nullptr, dy, x, lin.W->w.data(), M, lin.in,
                              lin.out);
    }
    for (const Lora<T>& lo : lin.loras) {
      LoraActs<T>& s = la[li++];
      const int64_t r = lo.A->shape[0], rows = lo.rows, in = lin.in;
      const T* xin = s.xd.empty() ? x : s.xd.data();
      const T* dys = dy + lo.row0;  // [M, rows] with row stride lin.out
      // dB[rows, r] += scale * dys^T ha
      cpu::gemm<T>(true, true, rows, r, M, lo.scale, dys, lin.out, s.ha.data(), r, T(1), lo.B->g.data(), r);
      // dha[M, r] = scale * dys B
      std::vector<T> dha(size_t(M * r));
      cpu::gemm<T>(false, true, M, r, rows, lo.scale, dys, lin.out, lo.B->w.data(), r, T(0), dha.data(), r);
      // dA[r, in] += dha^T xin
      cpu::gemm<T>(true, true, r, in, M, T(1), dha.data(), r, xin, in, T(1), lo.A->g.data(), in);
      // dx += (dha A), masked and rescaled like the forward's dropout
      if (s.xd.empty()) {
        cpu::gemm<T>(false, true, M, in, r, T(1), dha.data(), r, lo.A->w.data(), in, T(1), dx, in);
      } else {
        std::vector<T> dxin(size_t(M * in));
        cpu::gemm<T>(false, true, M, in, r, T(1), dha.data(), r, lo.A->w.data(), in, T(0), dxin.data(), in);
        const T keep = T(1.0 / (1.0 - lo.dropout));
        // The mask is not stored: the counter-based generator gives it again from (seed, step, i).
        parallel_for(M * in, 1 << 14, [&](int64_t i0, int64_t i1) {
          for (int64_t i = i0; i < i1; i++)
            if (!dropped(lo, step, i)) dx[i] += dxin[i] * keep;
        });
      }
    }
  }

  void forward(const int32_t* ids, int64_t B, int64_t T_, Acts<T>& a, Mode mode, int64_t step) {
    const int64_t N = B * T_, H = c_.hidden, I = c_.intermediate, hd = c_.head_dim();
    const int64_t Q = c_.qkv_dim(), qdim = c_.heads * hd, kvdim = c_.kv_heads * hd;
    const int nh = int(c_.heads), nkv = int(c_.kv_heads);
    const int64_t p0 = mode == Mode::Cached ? cache_len_ : 0;
    if (mode == Mode::Cached && B != 1) throw std::runtime_error("the KV cache holds one sequence (batch 1)");
    ensure_rope(p0 + T_);
    alloc_acts(a, B, T_, mode);
    a.step = step;
    if (mode == Mode::Cached) ensure_cache(p0 + T_);

    std::vector<T> x(size_t(N * H));
    cpu::embedding_forward<T>(x.data(), ids, embed_->w.data(), N, H);
    for (int64_t l = 0; l < c_.layers; l++) {
      Layer<T>& Lw = layers_[l];
      LayerActs<T>& L = a.layers[l];
      size_t li = 0;
      std::copy(x.begin(), x.end(), L.x_in.begin());
      cpu::rmsnorm_forward<T>(L.ln1.data(), L.rstd1.data(), L.x_in.data(), Lw.ln1->w.data(), N, H, c_.norm_eps);
      linear_fwd(Lw.qkv, L.qkv.data(), L.ln1.data(), N, L.lora, li, mode, step);
      cpu::rope_forward<T>(L.qkv.data(), Q, N, T_, p0, nh, int(hd), cos_.data(), sin_.data());
      cpu::rope_forward<T>(L.qkv.data() + qdim, Q, N, T_, p0, nkv, int(hd), cos_.data(), sin_.data());
      if (mode == Mode::Cached) {
        T* kc = kcache_[l].data();
        T* vc = vcache_[l].data();
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
      linear_fwd(Lw.o, x.data(), L.atty.data(), N, L.lora, li, mode, step, /*accumulate=*/true);
      std::copy(x.begin(), x.end(), L.x_mid.begin());
      cpu::rmsnorm_forward<T>(L.ln2.data(), L.rstd2.data(), L.x_mid.data(), Lw.ln2->w.data(), N, H, c_.norm_eps);
      linear_fwd(Lw.gate, L.gate.data(), L.ln2.data(), N, L.lora, li, mode, step);
      linear_fwd(Lw.up, L.up.data(), L.ln2.data(), N, L.lora, li, mode, step);
      cpu::swiglu_forward<T>(L.h.data(), L.gate.data(), L.up.data(), N * I);
      linear_fwd(Lw.down, x.data(), L.h.data(), N, L.lora, li, mode, step, /*accumulate=*/true);
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
      LayerActs<T>& L = a.layers[l];
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
    if (embed_->trainable) cpu::embedding_backward<T>(embed_->g.data(), dx.data(), ids, N, H);
  }

  void ensure_cache(int64_t n) {
    const int64_t kvdim = c_.kv_heads * c_.head_dim();
    if (kcache_.size() != size_t(c_.layers)) kcache_.resize(size_t(c_.layers)), vcache_.resize(size_t(c_.layers));
    if (int64_t(kcache_[0].size()) >= n * kvdim) return;
    const int64_t cap = std::max<int64_t>(n, std::max<int64_t>(256, 2 * int64_t(kcache_[0].size()) / kvdim));
    for (int64_t l = 0; l < c_.layers; l++) kcache_[l].resize(size_t(cap * kvdim)), vcache_[l].resize(size_t(cap * kvdim));
  }

  ModelConfig c_;
  std::deque<Param<T>> params_;  // deque: pointers stay valid as LoRA params are added
  std::unordered_map<std::string, Param<T>*> by_name_;
  std::unordered_map<std::string, View<T>> views_;
  std::vector<std::string> view_order_;
  std::unordered_map<std::string, bool> loaded_;
  std::vector<Param<T>*> lora_params_;
  Param<T>* embed_ = nullptr;
  Param<T>* norm_ = nullptr;
  Param<T>* head_ = nullptr;
  std::vector<Layer<T>> layers_;
  std::vector<T> cos_, sin_, head_norm_;
  int64_t rope_positions_ = 0;
  bool head_dirty_ = true;
  int64_t step_ = 0;
  Acts<T> train_, eval_, gen_;
  std::vector<std::vector<T>> kcache_, vcache_;
  int64_t cache_len_ = 0;
};

}  // namespace

std::unique_ptr<ModelBase> make_llama_model(const ModelConfig& cfg, bool f64) {
  if (f64) return std::make_unique<LlamaModel<double>>(cfg);
  return std::make_unique<LlamaModel<float>>(cfg);
}

}  // namespace sft
