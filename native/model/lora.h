// Linear layers with LoRA adapters: attaching them (PEFT's names and init), their forward and the
// mirrored backward with LoRA dropout, QLoRA's NF4 base weights, and merging adapters into W.
//
//   forward                                   backward (dy given)
//   y   = x W^T + b                           dx += dy W;  dW += dy^T x;  db += sum dy  (when trainable)
//   xd  = dropout(x)         (training)       dha = scale dy_rows B;  dB += scale dy_rows^T ha
//   ha  = xd A^T                              xd again;  dA += dha^T xd;  dx += dropout'(dha A)
//   y_rows += scale ha B^T
// Dropout masks are never stored, nor the dropped-out inputs: the counter-based generator
// (core/random.h) gives element i of adapter a's mask at step s again from (seed_a, s, i), on every
// backend, so backward rebuilds xd from x in scratch memory (one elementwise pass per adapter).
#pragma once
#include <cmath>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "model/params.h"

namespace sft::model {

template <class Bk>
struct Lora {
  std::string module;  // PEFT module path, e.g. model.layers.0.self_attn.q_proj
  Param<Bk>* A;        // [r, in]
  Param<Bk>* B;        // [rows, r]
  int64_t row0, rows;  // output rows of the linear it adapts
  double scale;        // alpha / r (or alpha / sqrt(r) with rsLoRA), rounded as G holds it
  double dropout;
  uint64_t seed;
  int64_t rank() const { return A->shape[0]; }
  // The key of this adapter's dropout mask at a training step; element i of the mask is mix(key + i)
  // (core/random.h), so `elem0` shifts the micro-batch's elements to where they sit in the global
  // batch of a data-parallel step (each rank draws the rows the one-rank run would draw for them).
  uint64_t mask_key(int64_t step, int64_t elem0 = 0) const { return rng::stream_key(seed, rng::dropout_stream(step)) + uint64_t(elem0); }
};

template <class Bk>
struct Linear {
  Param<Bk>* W = nullptr;  // [out, in]
  Param<Bk>* b = nullptr;  // [out] or null
  int64_t in = 0, out = 0;
  std::vector<Lora<Bk>> loras;
};

// What forward saves per adapter for backward: the rank-r intermediate.
template <class Bk>
struct LoraActs {
  typename Bk::T* ha = nullptr;
};

// Temporaries shared by every adapter (sized by the largest).
template <class Bk>
struct LoraScratch {
  typename Bk::T* dha = nullptr;  // [M, r]
  typename Bk::T* xd = nullptr;   // [M, in], adapters with dropout: the dropped-out input, then its gradient
  int64_t mask_row0 = 0;          // the micro-batch's first token row in its global batch (data parallel)
};

// Lays out one linear's adapter activations for M rows.
template <class Bk>
void lay_out_lora_acts(Carver& c, const Linear<Bk>& lin, std::vector<LoraActs<Bk>>& la, size_t& li, int64_t M,
                       const std::string& prefix) {
  for (const Lora<Bk>& lo : lin.loras) {
    if (la.size() <= li) la.resize(li + 1);
    LoraActs<Bk>& s = la[li++];
    c.take(s.ha, M * lo.rank(), prefix + lo.module.substr(lo.module.rfind('.') + 1) + " LoRA A output");
  }
}

// y[M, out] (+)= x W^T + b, plus each adapter's scale * (drop(x) A^T) B^T on its rows. la[li++]
// receives each adapter's saved activations.
template <class Bk>
void linear_forward(Bk& bk, const Linear<Bk>& lin, typename Bk::T* y, const typename Bk::T* x, int64_t M,
                    std::vector<LoraActs<Bk>>& la, size_t& li, Mode mode, int64_t step, const LoraScratch<Bk>& ws,
                    bool accumulate = false) {
  using T = typename Bk::T;
  if (lin.W->q) {
    bk.linear_forward_nf4(y, x, *lin.W->q, M, lin.in, lin.out, accumulate);
    if (lin.b) bk.add_bias(y, lin.b->w, M, lin.out);
  } else {
    bk.linear_forward(y, x, lin.W->w, lin.b ? lin.b->w : nullptr, M, lin.in, lin.out, accumulate);
  }
  for (const Lora<Bk>& lo : lin.loras) {
    LoraActs<Bk>& s = la[li++];
    const int64_t r = lo.rank();
    const T* xin = x;
    if (mode == Mode::Train && lo.dropout > 0) {
      bk.dropout_forward(ws.xd, x, M, lin.in, lo.dropout, lo.mask_key(step, ws.mask_row0 * lin.in));
      xin = ws.xd;
    }
    bk.template gemm<T>(false, false, M, r, lin.in, 1.0, xin, lin.in, lo.A->w, lin.in, 0.0, s.ha, r);
    bk.template gemm<T>(false, false, M, lo.rows, r, lo.scale, s.ha, r, lo.B->w, r, 1.0, y + lo.row0, lin.out);
  }
}

// Mirror of linear_forward: dx[M, in] += dy W (+ the adapters' path); weight, bias and adapter
// gradients where trainable.
template <class Bk>
void linear_backward(Bk& bk, const Linear<Bk>& lin, typename Bk::T* dx, const typename Bk::T* dy,
                     const typename Bk::T* x, int64_t M, std::vector<LoraActs<Bk>>& la, size_t& li, int64_t step,
                     const LoraScratch<Bk>& ws) {
  using T = typename Bk::T;
  using G = typename Bk::G;
  if (lin.W->q) {  // frozen NF4 base: only the input gradient
    bk.linear_backward_nf4(dx, dy, *lin.W->q, M, lin.in, lin.out);
    if (lin.b && lin.b->trainable) bk.bias_backward(lin.b->g, dy, M, lin.out);
  } else {
    bk.linear_backward(dx, lin.W->trainable ? lin.W->g : nullptr, lin.b && lin.b->trainable ? lin.b->g : nullptr, dy, x,
                       lin.W->w, M, lin.in, lin.out);
  }
  for (const Lora<Bk>& lo : lin.loras) {
    LoraActs<Bk>& s = la[li++];
    const int64_t r = lo.rank(), rows = lo.rows, in = lin.in;
    const bool dropped = lo.dropout > 0;
    const T* dys = dy + lo.row0;  // [M, rows] with row stride lin.out
    // dB[rows, r] += scale * dys^T ha
    bk.template gemm<G>(true, true, rows, r, M, lo.scale, dys, lin.out, s.ha, r, 1.0, lo.B->g, r);
    // dha[M, r] = scale * dys B
    bk.template gemm<T>(false, true, M, r, rows, lo.scale, dys, lin.out, lo.B->w, r, 0.0, ws.dha, r);
    // dA[r, in] += dha^T xin, the forward's input rebuilt from the same mask
    if (dropped) bk.dropout_forward(ws.xd, x, M, in, lo.dropout, lo.mask_key(step, ws.mask_row0 * in));
    bk.template gemm<G>(true, true, r, in, M, 1.0, ws.dha, r, dropped ? ws.xd : x, in, 1.0, lo.A->g, in);
    // dx += dha A, masked and rescaled like the forward's dropout (ws.xd is free again)
    if (!dropped) {
      bk.template gemm<T>(false, true, M, in, r, 1.0, ws.dha, r, lo.A->w, in, 1.0, dx, in);
    } else {
      bk.template gemm<T>(false, true, M, in, r, 1.0, ws.dha, r, lo.A->w, in, 0.0, ws.xd, in);
      bk.dropout_backward_add(dx, ws.xd, M * in, lo.dropout, lo.mask_key(step, ws.mask_row0 * in));
    }
  }
}

// Parameters with adapters on top: attach (PEFT's init), quantize the frozen linears, merge.
template <class Bk>
class LoraStore : public ParamStore<Bk> {
 public:
  using T = typename Bk::T;
  using G = typename Bk::G;
  using ParamStore<Bk>::ParamStore;

 protected:
  // A linear layer whose weight (and bias) are checkpoint tensors of these names.
  Linear<Bk> add_linear(const std::string& wname, int64_t in, int64_t out, const std::string& bname = "") {
    Linear<Bk> lin;
    lin.in = in;
    lin.out = out;
    lin.W = this->add_tensor(wname, {out, in});
    if (!bname.empty()) lin.b = this->add_tensor(bname, {out}, false);
    return lin;
  }

  static void check_lora_options(const LoraOptions& o) {
    if (o.rank <= 0) throw std::runtime_error("lora_rank must be > 0");
    if (o.dropout < 0 || o.dropout >= 1) throw std::runtime_error("lora_dropout must be in [0, 1)");
  }

  // Attach one adapter to rows [row0, row0 + rows) of lin, module path `mod` (PEFT naming). Its
  // values are set by init_adapters() once the family has attached all of them.
  void attach_lora(Linear<Bk>& lin, const std::string& mod, int64_t row0, int64_t rows, const LoraOptions& o,
                   std::vector<ParamInfo>& added) {
    for (const auto& existing : lin.loras)
      if (existing.module == mod) throw std::runtime_error("LoRA already attached to " + mod);
    const double scale = double(G(o.use_rslora ? o.alpha / std::sqrt(double(o.rank)) : o.alpha / double(o.rank)));
    Param<Bk>* A = this->add_param(mod + ".lora_A.weight", {o.rank, lin.in});
    Param<Bk>* Bp = this->add_param(mod + ".lora_B.weight", {rows, o.rank});
    for (Param<Bk>* p : {A, Bp}) {
      p->trainable = true;
      p->adapter = true;
      added.push_back({p->name, p->shape});
    }
    lin.loras.push_back({mod, A, Bp, row0, rows, scale, o.dropout, o.seed ^ rng::mix(fnv1a(A->name) + 1)});
    pending_init_.push_back({A, o.seed, 1.0 / std::sqrt(double(lin.in))});
  }

  // PEFT's init of the adapters just attached: A ~ kaiming_uniform(a = sqrt(5)) =
  // U(-1/sqrt(in), 1/sqrt(in)) from the counter-based generator, B = 0 (fresh memory is zeroed).
  void init_adapters() {
    this->materialize();
    this->relayout_trainable();
    if (!this->meta_) {
      for (const auto& pi : pending_init_) {
        Param<Bk>* A = pi.A;
        const uint64_t stream = fnv1a(A->name);
        std::vector<double> v(size_t(A->numel()));
        for (size_t i = 0; i < v.size(); i++) v[i] = (2 * rng::uniform01(pi.seed, stream, i) - 1) * pi.bound;
        // The values round to T (compute) and, with a master copy, to G: as one upload would.
        this->bk_.upload_values(A->w, v.data(), A->numel());
        if (A->master) this->bk_.upload_values(A->master, v.data(), A->numel());
      }
    }
    pending_init_.clear();
  }

  // NF4 for each listed frozen linear weight: one NF4 tensor per checkpoint tensor of the matrix, so
  // blocks and double-quant offsets match bitsandbytes'. Before the weights are touched (the way
  // to load QLoRA), the plan holds NF4 storage instead of T and each checkpoint tensor quantizes as
  // it loads (ParamStore::quantize_view); after (a randomized model), the values in T quantize now.
  // Returns bytes before / after.
  std::pair<int64_t, int64_t> quantize_linears(const std::vector<Linear<Bk>*>& lins, bool double_quant) {
    if (!Bk::supports(Op::Nf4Linear))
      throw std::runtime_error(std::string("QLoRA (bits 4) is not available on the ") + device_name(Bk::device) +
                               " backend yet; use bits 16 (LoRA) there, or device cpu");
    if (this->nf4_count_ && double_quant != this->nf4_double_quant_)
      throw std::runtime_error("quantize: NF4 weights already use the other double-quantization setting");
    this->nf4_double_quant_ = double_quant;
    this->unpack_base();  // the weights block is laid out again: panels keyed by the old addresses
    const bool values = this->materialized_ && !this->meta_;  // the weights hold values in T now
    int64_t before = 0, after = 0;
    for (Linear<Bk>* lin : lins) {
      Param<Bk>* p = lin->W;
      if (p->q) continue;
      if (p->trainable) throw std::runtime_error("cannot quantize trainable weight " + p->name);
      std::vector<typename Bk::Segment> segs, loaded;  // loaded: the views holding values in T now
      for (const auto& name : this->view_order_) {
        const View<Bk>& v = this->views_.at(name);
        if (v.p != p) continue;
        segs.push_back({v.row0, v.rows});
        if (this->loaded_.count(name)) loaded.push_back({v.row0, v.rows});
      }
      before += p->numel() * int64_t(sizeof(T));
      for (const auto& s : segs) after += int64_t(Bk::nf4_bytes_for(s.rows * lin->in, double_quant));
      this->nf4_workspace_ = std::max(this->nf4_workspace_, Bk::nf4_workspace_bytes(lin->out, lin->in));
      if (this->meta_) {
        p->q = std::make_unique<typename Bk::Nf4>();  // sizes only
      } else {
        p->q = this->bk_.nf4_matrix(lin->out, lin->in);
        // A view not loaded yet quantizes when it loads (a second segment of the same rows would
        // shadow it).
        if (values && !loaded.empty()) {
          std::vector<float> host(size_t(p->numel()));
          this->bk_.download_values(host.data(), p->w, p->numel());
          for (const auto& s : loaded) this->bk_.nf4_quantize_rows(*p->q, host.data() + s.row0 * lin->in, s, double_quant);
        }
      }
      p->w = nullptr;  // the full-precision copy goes with the relayout below (or is never laid out)
      this->nf4_count_++;
    }
    this->nf4_bytes_ += size_t(after);
    if (this->materialized_) {
      this->relayout(this->weights_, MemKind::Weights, [&](Carver& c) { this->lay_out_weights(c); }, true);
      if (!this->meta_) this->weights_changed();
    }
    return {before, after};
  }

  // Fold every adapter of the listed linears into its base weight (W[row0 + i, :] += scale * B A)
  // and drop the adapters' tensors.
  void merge_linears(const std::vector<Linear<Bk>*>& lins) {
    this->unpack_base();  // B A is added to W's rows
    for (Linear<Bk>* lin : lins) {
      for (const Lora<Bk>& lo : lin->loras) {
        if (lin->W->q) throw std::runtime_error("cannot merge LoRA into NF4 weights: load the base in full precision to merge");
        this->bk_.template gemm<T>(false, true, lo.rows, lin->in, lo.rank(), lo.scale, lo.B->w, lo.rank(), lo.A->w, lin->in,
                                   1.0, lin->W->w + lo.row0 * lin->in, lin->in);
        for (Param<Bk>* p : {lo.A, lo.B}) {
          this->by_name_.erase(p->name);
          p->trainable = false;
          p->shape = {0};
        }
      }
      lin->loras.clear();
    }
    this->relayout_trainable();
    this->weights_changed();
  }

 private:
  struct PendingInit {
    Param<Bk>* A;
    uint64_t seed;
    double bound;
  };
  std::vector<PendingInit> pending_init_;
};

}  // namespace sft::model
