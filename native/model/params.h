// Parameters of a model on a backend: their checkpoint names (views of row blocks), one block of
// base weights, one block of trainable tensors, and ONE flat gradient buffer (zeroing is one call,
// the global norm one pass). A family registers its tensors in its constructor; memory is taken only
// when the weights are first touched, so a model can be built "meta" (sizes only, no memory) to plan
// a run before anything is loaded.
#pragma once
#include <algorithm>
#include <cmath>
#include <deque>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"
#include "backend/plan.h"
#include "core/dtype.h"
#include "core/random.h"
#include "core/threads.h"
#include "model/model.h"

namespace sft::model {

enum class Mode { Train, Eval, Cached };

template <class Bk>
struct Param {
  using T = typename Bk::T;
  using G = typename Bk::G;
  std::string name;
  std::vector<int64_t> shape;
  bool trainable = false;
  bool decay = true;     // HF Trainer: no weight decay on biases and norm weights
  bool adapter = false;  // belongs to an adapter (LoRA, prompt tuning), not to the base model
  T* w = nullptr;        // the values compute reads (weights block, or trainable block for adapters)
  G* master = nullptr;   // trainable, and T != G: the fp32 master copy the optimizer updates
  G* g = nullptr;        // gradient (the flat gradient block) when trainable
  G* m = nullptr;        // AdamW moments: 32-bit ...
  G* v = nullptr;
  uint8_t* m8 = nullptr;  // ... or 8-bit blockwise codes with one fp32 scale per 256 elements
  uint8_t* v8 = nullptr;
  float* m_absmax = nullptr;
  float* v_absmax = nullptr;
  // The elements [opt_lo, opt_hi) whose AdamW state (m, v, m8, v8 and their scales) this rank
  // holds: the whole tensor, or its ZeRO-1 slice (model/zero_shard.h); the state pointers point
  // at that part's first element (and first 256-block).
  int64_t opt_lo = 0, opt_hi = 0;
  std::unique_ptr<typename Bk::Nf4> q;  // QLoRA: the weight lives here, w is null
  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  // What the optimizer updates: the master copy where there is one, else the values themselves.
  G* values() {
    if constexpr (std::is_same<T, G>::value) return master ? master : w;
    else return master;
  }
};

// A checkpoint tensor seen as a block of rows of an internal parameter.
template <class Bk>
struct View {
  Param<Bk>* p;
  int64_t row0, rows, cols;  // cols = 1 for vectors
  std::vector<int64_t> shape;
};

inline uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : s) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}

inline std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); i++) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

template <class Bk>
class ParamStore : public ModelBase {
 public:
  using T = typename Bk::T;
  using G = typename Bk::G;
  static constexpr bool kMaster = !std::is_same<T, G>::value;  // trainable tensors keep fp32 masters

  explicit ParamStore(bool meta) : meta_(meta) {}

  Device device() const override { return Bk::device; }
  Compute compute() const override { return Bk::compute; }

  std::vector<ParamInfo> base_params() const override {
    std::vector<ParamInfo> out;
    for (const auto& name : view_order_) out.push_back({name, views_.at(name).shape});
    return out;
  }

  void load_tensor(const std::string& name, const void* data, DType dtype, const std::vector<int64_t>& shape) override {
    const std::string key = checkpoint_key(name);
    auto it = views_.find(key);
    if (it == views_.end()) throw std::runtime_error("unexpected tensor \"" + name + "\": this model has no such weight");
    const View<Bk>& v = it->second;
    if (shape != v.shape)
      throw std::runtime_error("tensor \"" + name + "\" has shape " + shape_str(shape) + ", expected " + shape_str(v.shape));
    materialize();
    unpack_base();
    const int64_t off = v.row0 * v.cols, n = v.rows * v.cols;
    if (v.p->q) return quantize_view(key, v, [&](int64_t i) { return element(data, dtype, i); });
    bk_.upload_elems(v.p->w + off, data, dtype, n);
    if (v.p->master) bk_.upload_elems(v.p->master + off, data, dtype, n);
    loaded_.insert({key, true});
    weights_changed();
  }

  void randomize(uint64_t seed) override {
    materialize();
    if (meta_) return;
    unpack_base();
    // An NF4 weight quantized before it held values has no T storage to fill.
    for (const auto& name : view_order_)
      if (views_.at(name).p->q && !loaded_.count(name))
        throw std::runtime_error("randomize: \"" + name + "\" is NF4 with no values yet; randomize before quantize_nf4");
    for (auto& p : params_) {
      if (p.adapter || p.q || !p.w) continue;
      const bool matrix = p.shape.size() == 2;
      const bool norm = !matrix && p.name.size() > 7 && p.name.compare(p.name.size() - 7, 7, ".weight") == 0;
      const uint64_t key = rng::stream_key(seed, fnv1a(p.name));
      bk_.fill_normal(p.w, p.numel(), key, norm ? 1.0 : 0.0, matrix ? 1.0 / std::sqrt(double(p.shape[1])) : 0.0);
      if (p.master) bk_.cast(p.master, p.w, p.numel());
    }
    for (const auto& name : view_order_) loaded_.insert({name, true});
    weights_changed();
  }

  std::vector<std::string> missing_tensors() const override {
    std::vector<std::string> out;
    for (const auto& name : view_order_)
      if (!loaded_.count(name)) out.push_back(name);
    return out;
  }

  void set_base_trainable(bool trainable) override {
    end_inference();
    for (auto& p : params_) {
      if (p.adapter) continue;
      if (trainable && p.q) throw std::runtime_error("quantized (bits 4) weights cannot be trained: full fine-tuning needs 16/32-bit weights");
      p.trainable = trainable;
    }
    relayout_trainable();
  }

  std::vector<ParamInfo> trainable_params() const override {
    std::vector<ParamInfo> out;
    for (const auto& p : params_)
      if (p.trainable) out.push_back({p.name, p.shape});
    return out;
  }

  std::vector<double> get_tensor(const std::string& name) const override {
    const auto [p, off, n] = locate(name);
    if (!p->adapter) unpack_base();
    std::vector<double> out(static_cast<size_t>(n));
    if (p->q) {  // dequantized on request (tests, merging)
      std::vector<float> rows(static_cast<size_t>(n));
      const int64_t cols = p->shape[1];
      const_cast<Bk&>(bk_).nf4_decode_rows(rows.data(), *p->q, off / cols, n / cols);
      std::copy(rows.begin(), rows.end(), out.begin());
      return out;
    }
    if (!p->w) return out;  // never loaded: zeros
    if (p->master) const_cast<Bk&>(bk_).download_values(out.data(), p->master + off, n);
    else const_cast<Bk&>(bk_).download_values(out.data(), p->w + off, n);
    return out;
  }

  std::vector<double> get_grad(const std::string& name) const override {
    const auto [p, off, n] = locate(name);
    if (!p->trainable) throw std::runtime_error("tensor \"" + name + "\" is not trainable");
    std::vector<double> out(static_cast<size_t>(n));
    if (p->g) const_cast<Bk&>(bk_).download_values(out.data(), p->g + off, n);
    return out;
  }

  void set_tensor(const std::string& name, const double* data, int64_t n) override {
    const auto [p, off, count] = locate(name);
    if (n != count) throw std::runtime_error("set_tensor \"" + name + "\": got " + std::to_string(n) + " values, expected " + std::to_string(count));
    materialize();
    if (meta_) throw std::runtime_error("set_tensor \"" + name + "\": this model only plans memory (meta), it holds no values");
    if (!p->adapter) unpack_base();
    if (p->q) {
      auto v = views_.find(checkpoint_key(name));
      if (v == views_.end()) throw std::runtime_error("set_tensor \"" + name + "\": the weight is NF4: set its checkpoint tensors");
      return quantize_view(v->first, v->second, [&](int64_t i) { return data[i]; });
    }
    bk_.upload_values(p->w + off, data, n);
    if (p->master) bk_.upload_values(p->master + off, data, n);
    const std::string key = checkpoint_key(name);
    if (views_.count(key)) loaded_.insert({key, true});
    weights_changed();
  }

  void zero_grad() override {
    if (grads_.data()) bk_.zero(grads_.data(), grads_.bytes());
  }

  GradBlock grad_block() override {
    return {grads_.data(), int64_t(grads_.bytes() / sizeof(G)), sizeof(G) == 8, Bk::device == Device::Cuda};
  }

  double grad_norm() const override {
    // The flat block in parameter order, padding included (zeros add nothing): one pass, and the
    // same summation order as a walk over the parameters.
    if (!grads_.data()) return 0;
    return std::sqrt(const_cast<Bk&>(bk_).sum_squares(static_cast<const G*>(grads_.data()), int64_t(grads_.bytes() / sizeof(G))));
  }

  MemoryPlan memory_plan() const override {
    MemoryPlan m = plans_;
    if (nf4_bytes_) {
      m[MemKind::Weights].bytes += nf4_bytes_;
      m[MemKind::Weights].entries.push_back({"NF4 linear weights (" + std::to_string(nf4_count_) + " tensors)", nf4_bytes_});
    }
    if (nf4_workspace_) {  // the backend's one buffer an NF4 layer is dequantized into (0 on the CPU)
      m[MemKind::Workspace].bytes += nf4_workspace_;
      m[MemKind::Workspace].entries.push_back({"NF4 dequantized layer (the largest)", nf4_workspace_});
    }
    return m;
  }
  MemoryStats memory_stats() const override { return stats_; }

  int64_t packed_weights() const override { return packed_ ? bk_.packed_for_inference() : 0; }

 protected:
  // Inference panels (ModelBase::prepare_inference): base weights back to row-major before they
  // are read or written by their rows; inference_ stays, so the next inference forward repacks.
  void unpack_base() const {
    if (!packed_) return;
    const_cast<Bk&>(bk_).unpack_for_inference();
    packed_ = false;
  }
  // Training from here on: row-major for good (until prepare_inference again).
  void end_inference() {
    unpack_base();
    inference_ = false;
  }

  // Called after any weight changes (a family with derived weights recomputes them lazily).
  virtual void weights_changed() {}
  // Buffers a family derives from its weights (NormHead's normalised rows, ALiBi slopes) live in
  // the weights block after the base tensors.
  virtual void lay_out_derived(Carver&) {}

  // One checkpoint tensor of an NF4 weight (quantize_nf4 before loading), quantized as it arrives
  // from host floats that hold what T would: the same bits as loading in T and quantizing after,
  // and the weight never exists in T on the device.
  template <typename F>
  void quantize_view(const std::string& key, const View<Bk>& v, F value) {
    if (meta_) throw std::runtime_error("tensor \"" + key + "\": this model only plans memory (meta), it holds no values");
    if (loaded_.count(key))
      throw std::runtime_error("tensor \"" + key + "\" is already in its NF4 weight; an NF4 tensor is loaded once");
    const int64_t n = v.rows * v.cols;
    std::vector<float> host(static_cast<size_t>(n));
    // On all threads: a 7B load converts ~6.5 G values here, once each.
    parallel_for(n, int64_t(1) << 16, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; i++) host[size_t(i)] = Bk::as_stored(value(i));
    });
    bk_.nf4_quantize_rows(*v.p->q, host.data(), {v.row0, v.rows}, nf4_double_quant_);
    loaded_.insert({key, true});
  }

  // Checkpoint names may omit optional_prefix_ (Bloom: "transformer."); the stored name has it.
  std::string checkpoint_key(const std::string& name) const {
    if (optional_prefix_.empty() || views_.count(name)) return name;
    const std::string full = optional_prefix_ + name;
    return views_.count(full) ? full : name;
  }

  Param<Bk>* add_param(const std::string& name, std::vector<int64_t> shape, bool decay = true) {
    params_.emplace_back();
    Param<Bk>& p = params_.back();
    p.name = name;
    p.shape = std::move(shape);
    p.decay = decay;
    by_name_[name] = &p;
    return &p;
  }

  void view(const std::string& name, Param<Bk>* p, int64_t row0, int64_t rows, int64_t cols, std::vector<int64_t> shape) {
    views_[name] = View<Bk>{p, row0, rows, cols, std::move(shape)};
    view_order_.push_back(name);
  }

  // A whole parameter under its own name (the common case).
  Param<Bk>* add_tensor(const std::string& name, std::vector<int64_t> shape, bool decay = true) {
    Param<Bk>* p = add_param(name, shape, decay);
    view(name, p, 0, shape[0], shape.size() > 1 ? shape[1] : 1, shape);
    return p;
  }

  // A name is a checkpoint view (HF name) or an internal/adapter parameter name.
  std::tuple<Param<Bk>*, int64_t, int64_t> locate(const std::string& name) const {
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

  // ---- blocks ------------------------------------------------------------------------------------

  // (Re)allocates one block of `kind` laid out by lay_out(Carver&), copying what the previous block
  // held for every buffer that existed before (same pointer variable). A meta model only measures.
  template <typename F>
  void relayout(Block<Bk>& blk, MemKind kind, F lay_out, bool keep_contents) {
    Carver measure(kind);
    lay_out(measure);
    plans_[kind] = measure.plan();
    if (meta_) return;
    Block<Bk> fresh(&bk_, kind, measure.bytes());
    stats_.allocations[size_t(kind)]++;
    Carver assign(kind, fresh.data());
    lay_out(assign);
    if (keep_contents) {
      // The same take() calls in the same order: slot i of the measure pass is buffer i now.
      Carver again(kind);
      lay_out(again);
      for (size_t i = 0; i < measure.old_slots().size(); i++) {
        const auto& o = measure.old_slots()[i];
        const void* now = again.old_slots()[i].old;
        if (o.old && now && o.old != now) bk_.copy(const_cast<void*>(now), o.old, o.bytes);
      }
    }
    blk = std::move(fresh);
  }

  // The base weights' block, taken when the weights are first touched.
  void materialize() {
    if (materialized_) return;
    materialized_ = true;
    relayout(weights_, MemKind::Weights, [&](Carver& c) { lay_out_weights(c); }, false);
    relayout_trainable();
    if (!meta_) weights_changed();  // derived weights (ALiBi slopes, NormHead rows) from the start
  }

  void lay_out_weights(Carver& c) {
    for (auto& p : params_)
      if (!p.adapter && !p.q) c.take(p.w, p.numel(), p.name);
    lay_out_derived(c);
  }

  // Trainable tensors and the flat gradient block follow the set of trainable parameters (adapters
  // attached, base weights made trainable, adapters merged away).
  void relayout_trainable() {
    if (!materialized_ && !meta_) return;  // laid out with the weights
    relayout(trainable_, MemKind::Trainable, [&](Carver& c) {
      for (auto& p : params_) {
        if (p.adapter) c.take(p.w, p.numel(), p.name);
        if (kMaster && p.trainable) c.take(p.master, p.numel(), p.name + " (fp32 master)");
        else p.master = nullptr;
      }
    }, true);
    if (kMaster && !meta_)  // a new master starts from the values compute has
      for (auto& p : params_)
        if (p.trainable && !p.adapter && p.master && p.w) bk_.cast(p.master, p.w, p.numel());
    relayout(grads_, MemKind::Grads, [&](Carver& c) {
      for (auto& p : params_)
        if (p.trainable) c.take(p.g, p.numel(), p.name);
        else p.g = nullptr;
    }, false);
    optimizer_stale_ = true;
    trainable_changed();
  }

  // A family with planned activations re-plans them (adapters' buffers, trainable heads).
  virtual void trainable_changed() {}

  Bk bk_;
  bool meta_ = false;
  bool materialized_ = false;
  bool optimizer_stale_ = true;  // the trainable set changed since the optimizer block was laid out
  std::deque<Param<Bk>> params_;  // deque: pointers stay valid as adapter tensors are added
  std::unordered_map<std::string, Param<Bk>*> by_name_;
  std::unordered_map<std::string, View<Bk>> views_;
  std::vector<std::string> view_order_;
  std::unordered_map<std::string, bool> loaded_;
  std::string optional_prefix_;
  Block<Bk> weights_, trainable_, grads_;
  MemoryPlan plans_;
  MemoryStats stats_;
  size_t nf4_bytes_ = 0;
  int64_t nf4_count_ = 0;
  size_t nf4_workspace_ = 0;
  bool nf4_double_quant_ = true;  // how NF4 weights quantize as their tensors load
  bool inference_ = false;        // prepare_inference() called, nothing trained since
  mutable bool packed_ = false;   // the frozen weights are in the backend's inference layout now
};

}  // namespace sft::model
