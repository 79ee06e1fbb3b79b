// What a model family's CPU implementation shares with every other family, whatever its
// architecture: parameters with their checkpoint names (views of row blocks), linear layers with
// LoRA adapters (forward and mirrored backward, dropout masks), NF4 quantization of the frozen
// linears, gradients, AdamW and its saved state. A family derives ParamStore<T>, declares its
// parameters in its constructor and writes forward/backward (model/llama.cpp, model/bloom.cpp).
//
#pragma once
#include <algorithm>
#include <cmath>
#include <deque>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "core/threads.h"
#include "cpu/gemm.h"
#include "cpu/ops.h"
#include "cpu/quant.h"
#include "model/model.h"

namespace sft::store {

template <typename T>
struct Param {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<T> w, g, m, v;
  std::vector<uint8_t> m8, v8;              // 8-bit AdamW states (blocks of 256) instead of m, v
  std::vector<float> m_absmax, v_absmax;
  bool trainable = false;
  bool decay = true;  // HF Trainer: no weight decay on biases and norm weights
  bool adapter = false;  // belongs to an adapter (LoRA, prompt tuning), not to the base model
  std::unique_ptr<cpu::Nf4Weight> q;  // QLoRA: the weight lives here, w is empty
  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

// A checkpoint tensor seen as a block of rows of an internal parameter.
template <typename T>
struct View {
  Param<T>* p;
  int64_t row0, rows, cols;  // cols = 1 for vectors
  std::vector<int64_t> shape;
};

template <typename T>
struct Lora {
  std::string module;  // PEFT module path, e.g. transformer.h.0.self_attention.query_key_value
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

// Saved per-LoRA activations: the (dropped-out) input and the rank-r intermediate.
template <typename T>
struct LoraActs {
  std::vector<T> xd, ha;
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

inline std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); i++) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

template <typename T>
class ParamStore : public ModelBase {
 public:
  std::vector<ParamInfo> base_params() const override {
    std::vector<ParamInfo> out;
    for (const auto& name : view_order_) out.push_back({name, views_.at(name).shape});
    return out;
  }

  void load_tensor(const std::string& name, const void* data, DType dtype,
                   const std::vector<int64_t>& shape) override {
    const std::string key = checkpoint_key(name);
    auto it = views_.find(key);
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
    loaded_.insert({key, true});
    weights_changed();
  }

  std::vector<std::string> missing_tensors() const override {
    std::vector<std::string> out;
    for (const auto& name : view_order_)
      if (!loaded_.count(name)) out.push_back(name);
    return out;
  }

  void set_base_trainable(bool trainable) override {
    for (auto& p : params_) {
      if (p.adapter) continue;
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
    const std::string key = checkpoint_key(name);
    if (views_.count(key)) loaded_.insert({key, true});
    weights_changed();
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

  Moments get_moments(const std::string& name) const override {
    auto it = by_name_.find(name);
    if (it == by_name_.end() || !it->second->trainable) throw std::runtime_error("no trainable tensor named \"" + name + "\"");
    const Param<T>& p = *it->second;
    return {std::vector<float>(p.m.begin(), p.m.end()), std::vector<float>(p.v.begin(), p.v.end()), p.m8, p.v8, p.m_absmax, p.v_absmax};
  }

  void set_moments(int64_t step, const std::string& name, const Moments& s) override {
    auto it = by_name_.find(name);
    if (it == by_name_.end() || !it->second->trainable) throw std::runtime_error("optimizer state for \"" + name + "\": no such trainable tensor");
    Param<T>& p = *it->second;
    const int64_t n = p.numel(), blocks = (n + cpu::kQ8Block - 1) / cpu::kQ8Block;
    auto bad = [&](const char* what) { throw std::runtime_error("optimizer state for \"" + name + "\": " + what); };
    if (!s.m.empty() && (int64_t(s.m.size()) != n || s.v.size() != s.m.size())) bad("32-bit moments of the wrong size");
    if (!s.m8.empty() && (int64_t(s.m8.size()) != n || s.v8.size() != s.m8.size() || int64_t(s.m_absmax.size()) != blocks ||
                          int64_t(s.v_absmax.size()) != blocks))
      bad("8-bit moments of the wrong size");
    p.m.assign(s.m.begin(), s.m.end()), p.v.assign(s.v.begin(), s.v.end());  // empty: no step taken yet
    p.m8 = s.m8, p.v8 = s.v8, p.m_absmax = s.m_absmax, p.v_absmax = s.v_absmax;
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
      const double wd = p.decay ? o.weight_decay : 0.0;
      if (o.eight_bit && p.numel() >= o.min_8bit_size) {
        if (p.m8.empty()) {  // zero moments: code of 0 in each map, absmax 0
          const int64_t blocks = (p.numel() + cpu::kQ8Block - 1) / cpu::kQ8Block;
          p.m8.assign(p.w.size(), cpu::map_index(cpu::dynamic_map_signed(), 0.0f));
          p.v8.assign(p.w.size(), cpu::map_index(cpu::dynamic_map_unsigned(), 0.0f));
          p.m_absmax.assign(size_t(blocks), 0.0f), p.v_absmax.assign(size_t(blocks), 0.0f);
        }
        cpu::adamw_update_8bit<T>(p.w.data(), p.g.data(), p.m8.data(), p.m_absmax.data(), p.v8.data(), p.v_absmax.data(),
                                  p.numel(), o.lr, o.beta1, o.beta2, o.eps, wd, step_, clip);
        continue;
      }
      if (p.m.size() != p.w.size()) p.m.assign(p.w.size(), T(0)), p.v.assign(p.w.size(), T(0));
      cpu::adamw_update<T>(p.w.data(), p.g.data(), p.m.data(), p.v.data(), p.numel(), o.lr, o.beta1, o.beta2, o.eps, wd,
                           step_, clip);
    }
    weights_changed();
    return norm;
  }

  // Prompt tuning: virtual-token embeddings [n, hidden], an adapter parameter (never a base weight).
  // The family prepends them to every sequence in forward and sums their rows of dx in backward.
  ParamInfo add_prompt_tuning(int64_t n, const float* init, uint64_t seed) override {
    if (prompt_) throw std::runtime_error("prompt tuning is already attached");
    if (n <= 0) throw std::runtime_error("num_virtual_tokens must be > 0");
    const int64_t H = this->config().hidden;
    prompt_ = add_param("prompt_embeddings", {n, H}, false);
    if (init) {
      for (int64_t i = 0; i < n * H; i++) prompt_->w[i] = T(init[i]);
    } else {  // N(0, 1) (nn.Embedding's default) by Box-Muller on the counter-based generator
      const uint64_t stream = fnv1a(prompt_->name);
      for (int64_t i = 0; i < n * H; i++) {
        const double u1 = std::max(uniform01(seed, stream, uint64_t(2 * i)), 1e-300), u2 = uniform01(seed, stream, uint64_t(2 * i + 1));
        prompt_->w[i] = T(std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2));
      }
    }
    prompt_->trainable = true;
    prompt_->adapter = true;
    prompt_->g.assign(prompt_->w.size(), T(0));
    return {prompt_->name, prompt_->shape};
  }

  void reset_cache() override { cache_len_ = 0; }
  void truncate_cache(int64_t n) override {
    if (n < 0 || n > cache_len_)
      throw std::runtime_error("truncateCache(" + std::to_string(n) + "): the cache holds " + std::to_string(cache_len_) + " tokens");
    cache_len_ = n;  // positions >= n are simply overwritten by the next feed
  }
  int64_t cache_length() const override { return cache_len_; }

 protected:
  enum class Mode { Train, Eval, Cached };

  // Called after any weight changes (a family with derived weights recomputes them lazily).
  virtual void weights_changed() {}

  // Checkpoint names may omit optional_prefix_ (Bloom: "transformer."); the stored name has it.
  std::string checkpoint_key(const std::string& name) const {
    if (optional_prefix_.empty() || views_.count(name)) return name;
    const std::string full = optional_prefix_ + name;
    return views_.count(full) ? full : name;
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
  // The whole parameter under its own name (the common case).
  Param<T>* add_tensor(const std::string& name, std::vector<int64_t> shape, bool decay = true) {
    Param<T>* p = add_param(name, shape, decay);
    view(name, p, 0, shape[0], shape.size() > 1 ? shape[1] : 1, shape);
    return p;
  }

  // A linear layer whose weight (and bias) are checkpoint tensors of these names.
  Linear<T> add_linear(const std::string& wname, int64_t in, int64_t out, const std::string& bname = "") {
    Linear<T> lin;
    lin.in = in;
    lin.out = out;
    lin.W = add_tensor(wname, {out, in});
    if (!bname.empty()) lin.b = add_tensor(bname, {out}, false);
    return lin;
  }

  // Attach one adapter to rows [row0, row0 + rows) of lin, module path `mod` (PEFT naming).
  // PEFT's init: A ~ kaiming_uniform(a = sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)); B = 0.
  void attach_lora(Linear<T>& lin, const std::string& mod, int64_t row0, int64_t rows, const LoraOptions& o,
                   std::vector<ParamInfo>& added) {
    for (const auto& existing : lin.loras)
      if (existing.module == mod) throw std::runtime_error("LoRA already attached to " + mod);
    const T scale = T(o.use_rslora ? o.alpha / std::sqrt(double(o.rank)) : o.alpha / double(o.rank));
    Param<T>* A = add_param(mod + ".lora_A.weight", {o.rank, lin.in});
    Param<T>* Bp = add_param(mod + ".lora_B.weight", {rows, o.rank});
    const double bound = 1.0 / std::sqrt(double(lin.in));
    const uint64_t stream = fnv1a(A->name);
    for (int64_t i = 0; i < A->numel(); i++) A->w[i] = T((2 * uniform01(o.seed, stream, i) - 1) * bound);
    for (Param<T>* q : {A, Bp}) {
      q->trainable = true;
      q->adapter = true;
      q->g.assign(q->w.size(), T(0));
      added.push_back({q->name, q->shape});
    }
    lin.loras.push_back({mod, A, Bp, row0, rows, scale, o.dropout, o.seed ^ mix(stream + 1)});
  }

  static void check_lora_options(const LoraOptions& o) {
    if (o.rank <= 0) throw std::runtime_error("lora_rank must be > 0");
    if (o.dropout < 0 || o.dropout >= 1) throw std::runtime_error("lora_dropout must be in [0, 1)");
  }

  // NF4 for each listed frozen linear weight: one NF4 tensor per checkpoint tensor of the matrix,
  // so blocks and double-quant offsets match bitsandbytes'. Returns bytes before / after.
  std::pair<int64_t, int64_t> quantize_linears(const std::vector<Linear<T>*>& lins, bool double_quant) {
    int64_t before = 0, after = 0;
    for (Linear<T>* lin : lins) {
      Param<T>* p = lin->W;
      if (p->q) continue;
      if (p->trainable) throw std::runtime_error("cannot quantize trainable weight " + p->name);
      auto q = std::make_unique<cpu::Nf4Weight>();
      q->rows = lin->out;
      q->cols = lin->in;
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
    return {before, after};
  }

  // Fold every adapter of the listed linears into its base weight (W[row0 + i, :] += scale * B A)
  // and drop the adapters' tensors. The caller resets its saved activations (LoRA slots are gone).
  void merge_linears(const std::vector<Linear<T>*>& lins) {
    for (Linear<T>* lin : lins) {
      for (const Lora<T>& lo : lin->loras) {
        if (lin->W->q) throw std::runtime_error("cannot merge LoRA into NF4 weights: load the base in full precision to merge");
        const int64_t r = lo.A->shape[0];
        cpu::gemm<T>(false, true, lo.rows, lin->in, r, lo.scale, lo.B->w.data(), r, lo.A->w.data(), lin->in, T(1),
                     lin->W->w.data() + lo.row0 * lin->in, lin->in);
        for (Param<T>* p : {lo.A, lo.B}) {
          by_name_.erase(p->name);
          p->trainable = false;
          std::vector<T>().swap(p->w), std::vector<T>().swap(p->g), std::vector<T>().swap(p->m), std::vector<T>().swap(p->v);
          p->shape = {0};
        }
      }
      lin->loras.clear();
    }
    weights_changed();
  }

  // A name is a checkpoint view (HF name) or an internal/LoRA parameter name.
  std::tuple<Param<T>*, int64_t, int64_t> locate(const std::string& name) const {
    auto v = views_.find(checkpoint_key(name));
    if (v != views_.end()) return {v->second.p, v->second.row0 * v->second.cols, v->second.rows * v->second.cols};
    auto p = by_name_.find(name);
    if (p != by_name_.end()) return {p->second, 0, p->second->numel()};
    throw std::runtime_error("no tensor named \"" + name + "\"");
  }

  void check_ids(const int32_t* ids, int64_t n, int64_t vocab) const {
    for (int64_t i = 0; i < n; i++)
      if (ids[i] < 0 || ids[i] >= vocab)
        throw std::runtime_error("token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                                 " is outside the vocabulary (size " + std::to_string(vocab) + ")");
  }

  // LoRA dropout: element i of this adapter's input at training step `step` is zeroed.
  static bool dropped(const Lora<T>& lo, int64_t step, int64_t i) {
    return uniform01(lo.seed, mix(uint64_t(step) * 0x100000001b3ull), uint64_t(i)) < lo.dropout;
  }

  // y[M, out] (+)= x W^T + b, plus each LoRA's scale * (drop(x) A^T) B^T on its rows.
  // la[li++] receives each adapter's saved activations.
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

  // Virtual positions at the start of each row for this forward: all of them, except in cached
  // generation after the first feed (they are in the cache already).
  int64_t virtual_tokens(Mode mode) const { return prompt_ && (mode != Mode::Cached || cache_len_ == 0) ? prompt_->shape[0] : 0; }

  // Targets per internal position (B rows of nv + T): virtual positions never count.
  static std::vector<int32_t> internal_targets(const int32_t* labels, int64_t B, int64_t T_, int64_t nv) {
    std::vector<int32_t> t(size_t(B * (T_ + nv)), -100);
    for (int64_t b = 0; b < B; b++) std::copy(labels + b * T_, labels + (b + 1) * T_, t.begin() + b * (T_ + nv) + nv);
    return t;
  }

  // The real positions' rows of [B, nv + T, width] values (virtual ones dropped).
  static std::vector<float> real_rows(const std::vector<T>& x, int64_t B, int64_t T_, int64_t nv, int64_t width) {
    std::vector<float> out(size_t(B * T_ * width));
    for (int64_t b = 0; b < B; b++)
      std::copy(x.begin() + (b * (T_ + nv) + nv) * width, x.begin() + (b + 1) * (T_ + nv) * width, out.begin() + b * T_ * width);
    return out;
  }

  // Embedding rows for B sequences: the virtual tokens (when nv > 0), then table[ids].
  void embed_rows(T* x, const int32_t* ids, const T* table, int64_t B, int64_t Tu, int64_t nv, int64_t H) const {
    for (int64_t b = 0; b < B; b++) {
      if (nv) std::copy(prompt_->w.begin(), prompt_->w.end(), x + b * (Tu + nv) * H);
      cpu::embedding_forward<T>(x + (b * (Tu + nv) + nv) * H, ids + b * Tu, table, Tu, H);
    }
  }

  // Mirror of embed_rows: dtable (when trainable) gets the real rows, the virtual tokens the sum over the batch.
  void embed_rows_backward(Param<T>* table, const T* dx, const int32_t* ids, int64_t B, int64_t Tu, int64_t nv, int64_t H) {
    if (table->trainable)
      for (int64_t b = 0; b < B; b++) cpu::embedding_backward<T>(table->g.data(), dx + (b * (Tu + nv) + nv) * H, ids + b * Tu, Tu, H);
    if (nv)
      for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < nv * H; i++) prompt_->g[i] += dx[b * (Tu + nv) * H + i];
  }

  // KV cache, batch 1: per layer, `width` keys (values) per position; grows geometrically.
  void ensure_cache(int64_t layers, int64_t positions, int64_t width) {
    if (kcache_.size() != size_t(layers)) kcache_.resize(size_t(layers)), vcache_.resize(size_t(layers));
    if (int64_t(kcache_[0].size()) >= positions * width) return;
    const int64_t cap = std::max<int64_t>(positions, std::max<int64_t>(256, 2 * int64_t(kcache_[0].size()) / width));
    for (int64_t l = 0; l < layers; l++) kcache_[l].resize(size_t(cap * width)), vcache_[l].resize(size_t(cap * width));
  }

  std::deque<Param<T>> params_;  // deque: pointers stay valid as LoRA params are added
  std::unordered_map<std::string, Param<T>*> by_name_;
  std::unordered_map<std::string, View<T>> views_;
  std::vector<std::string> view_order_;
  std::unordered_map<std::string, bool> loaded_;
  std::string optional_prefix_;
  int64_t step_ = 0;
  int64_t cache_len_ = 0;
  std::vector<std::vector<T>> kcache_, vcache_;
  Param<T>* prompt_ = nullptr;  // prompt tuning's virtual-token embeddings, when attached
  bool checkpointing_ = false;  // set by families that implement set_gradient_checkpointing
};

// The ModelBase entry points every family implements the same way around its own forward and
// backward (CRTP): Model must provide forward(ids, B, T, acts, mode, step), backward(ids, acts), and
// Acts members train_, eval_, gen_ whose logits / nv / T_ fields hold the last pass's results.
template <typename T, typename Model>
class Family : public ParamStore<T> {
  using Mode = typename ParamStore<T>::Mode;

 public:
  double forward_backward(const int32_t* ids, const int32_t* labels, int64_t B, int64_t T_, double scale, int64_t step,
                          int64_t* count) override {
    Model& m = self();
    this->check_ids(ids, B * T_, this->config().vocab);
    m.forward(ids, B, T_, m.train_, Mode::Train, step);
    const auto targets = this->internal_targets(labels, B, T_, m.train_.nv);
    const double loss = cpu::cross_entropy<T>(m.train_.logits.data(), targets.data(), B * m.train_.T_, this->config().vocab,
                                              T(scale), true, count);
    m.backward(ids, m.train_);
    return loss;
  }

  double forward_loss(const int32_t* ids, const int32_t* labels, int64_t B, int64_t T_, int64_t step, bool training,
                      int64_t* count) override {
    Model& m = self();
    this->check_ids(ids, B * T_, this->config().vocab);
    m.forward(ids, B, T_, m.eval_, training ? Mode::Train : Mode::Eval, step);
    const auto targets = this->internal_targets(labels, B, T_, m.eval_.nv);
    return cpu::cross_entropy<T>(m.eval_.logits.data(), targets.data(), B * m.eval_.T_, this->config().vocab, T(1), false, count);
  }

  std::vector<float> logits(const int32_t* ids, int64_t B, int64_t T_) override {
    Model& m = self();
    this->check_ids(ids, B * T_, this->config().vocab);
    m.forward(ids, B, T_, m.eval_, Mode::Eval, 0);
    return this->real_rows(m.eval_.logits, B, T_, m.eval_.nv, this->config().vocab);  // virtual positions dropped
  }

  std::vector<float> feed(const int32_t* ids, int64_t n) override {
    Model& m = self();
    if (n <= 0) throw std::runtime_error("feed: no tokens");
    this->check_ids(ids, n, this->config().vocab);
    m.forward(ids, 1, n, m.gen_, Mode::Cached, 0);
    return std::vector<float>(m.gen_.logits.begin(), m.gen_.logits.end());
  }

 private:
  Model& self() { return static_cast<Model&>(*this); }
};

}  // namespace sft::store
