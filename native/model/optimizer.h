// AdamW over the trainable tensors, as torch.optim.AdamW computes it, with global-norm clipping
// (torch.nn.utils.clip_grad_norm_) over the flat gradient block, 32-bit or bitsandbytes-style
// 8-bit blockwise moments in one optimizer block, and the state a checkpoint saves and restores.
// ZeRO stage 1: with shard_optimizer(rank, size) the block holds this rank's slice of the state only
// (model/zero_shard.h), the step updates that slice and all-gathers the new values.
#pragma once
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "model/lora.h"
#include "model/zero_shard.h"

namespace sft::model {

constexpr int64_t kQ8Block = 256;  // elements per 8-bit moment scale (bitsandbytes' blocksize)

// The 8-bit scales of the elements [lo, hi) of a tensor, lo a multiple of kQ8Block: the blocks
// from lo / kQ8Block to the one holding element hi - 1.
inline int64_t q8_blocks(int64_t lo, int64_t hi) { return hi > lo ? (hi + kQ8Block - 1) / kQ8Block - lo / kQ8Block : 0; }

template <class Bk>
class OptimizerStore : public LoraStore<Bk> {
 public:
  using T = typename Bk::T;
  using G = typename Bk::G;
  using LoraStore<Bk>::LoraStore;

  int64_t optimizer_step() const override { return step_; }

  Moments get_moments(const std::string& name) const override {
    const Param<Bk>& p = trainable(name);
    Moments out;
    if (!moments_live_) return out;  // no step taken yet: empty, as a checkpoint stores it
    Bk& bk = const_cast<Bk&>(this->bk_);
    // The whole tensor's layout; this rank's part [lo, lo + k) filled (all of it when unsharded).
    const int64_t n = p.numel(), lo = p.opt_lo, k = p.opt_hi - p.opt_lo;
    if (q8(p)) {
      const int64_t blocks = q8_blocks(0, n), b0 = lo / kQ8Block, kb = q8_blocks(lo, p.opt_hi);
      out.m8.resize(size_t(n)), out.v8.resize(size_t(n)), out.m_absmax.resize(size_t(blocks)), out.v_absmax.resize(size_t(blocks));
      if (k) {
        bk.download(out.m8.data() + lo, p.m8, size_t(k)), bk.download(out.v8.data() + lo, p.v8, size_t(k));
        bk.download(out.m_absmax.data() + b0, p.m_absmax, size_t(kb) * 4), bk.download(out.v_absmax.data() + b0, p.v_absmax, size_t(kb) * 4);
      }
    } else {
      out.m.resize(size_t(n)), out.v.resize(size_t(n));
      if (k) bk.download_values(out.m.data() + lo, p.m, k), bk.download_values(out.v.data() + lo, p.v, k);
    }
    return out;
  }

  void set_moments(int64_t step, const std::string& name, const Moments& s) override {
    Param<Bk>& p = trainable(name);
    const int64_t n = p.numel(), blocks = (n + kQ8Block - 1) / kQ8Block;
    auto bad = [&](const char* what) { throw std::runtime_error("optimizer state for \"" + name + "\": " + what); };
    if (!s.m.empty() && (int64_t(s.m.size()) != n || s.v.size() != s.m.size())) bad("32-bit moments of the wrong size");
    if (!s.m8.empty() && (int64_t(s.m8.size()) != n || s.v8.size() != s.m8.size() || int64_t(s.m_absmax.size()) != blocks ||
                          int64_t(s.v_absmax.size()) != blocks))
      bad("8-bit moments of the wrong size");
    step_ = step;
    if (s.m.empty() && s.m8.empty()) return;  // saved before the first step: nothing to restore
    // The saved format decides the layout: 8-bit codes mean 8-bit states for tensors this large.
    if (!s.m8.empty()) lay_out_optimizer(true, min_8bit_, paged_);
    else if (n >= min_8bit_) lay_out_optimizer(false, min_8bit_, paged_);
    else lay_out_optimizer(eight_bit_, min_8bit_, paged_);
    if (!s.m8.empty() != q8(p)) bad("8-bit and 32-bit states mixed differently than this run lays them out");
    // The saved state is the whole tensor's (world-size independent); this rank takes its part.
    const int64_t lo = p.opt_lo, k = p.opt_hi - p.opt_lo, b0 = lo / kQ8Block, kb = q8_blocks(lo, p.opt_hi);
    if (k && q8(p)) {
      this->bk_.upload(p.m8, s.m8.data() + lo, size_t(k)), this->bk_.upload(p.v8, s.v8.data() + lo, size_t(k));
      this->bk_.upload(p.m_absmax, s.m_absmax.data() + b0, size_t(kb) * 4), this->bk_.upload(p.v_absmax, s.v_absmax.data() + b0, size_t(kb) * 4);
    } else if (k) {
      this->bk_.upload_values(p.m, s.m.data() + lo, k), this->bk_.upload_values(p.v, s.v.data() + lo, k);
    }
    moments_live_ = true;
  }

  // Unscale (o.inv_scale), clip to max_grad_norm, then one AdamW step; returns the unscaled norm
  // before clipping. A non-finite norm (an fp16 overflow, or divergence) skips the step entirely,
  // as GradScaler.step does when unscale_ found an inf/NaN.
  double adamw_step(const AdamWOptions& o) override {
    // The unscale is folded into the one multiplier the update applies to g: with a power-of-two
    // scale (GradScaler's are) the norm and the update equal an unscaled run's bit for bit.
    const double norm = this->grad_norm() * o.inv_scale;
    // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is < 1.
    double clip = 1.0;
    if (o.max_grad_norm > 0) clip = std::min(1.0, o.max_grad_norm / (norm + 1e-6));
    if (!std::isfinite(norm)) return norm;  // never write NaN/Inf into the weights; caller reports
    const double g_mul = clip * o.inv_scale;
    lay_out_optimizer(o.eight_bit, o.min_8bit_size, o.paged);
    step_++;
    const bool sharded = shard_size_ > 1;
    for (auto& p : this->params_) {
      if (!p.trainable) continue;
      // This rank's part (all of it unsharded): elementwise, and blockwise on whole 8-bit blocks, so
      // each element gets the unsharded update's bits.
      const int64_t lo = p.opt_lo, k = p.opt_hi - p.opt_lo;
      const double wd = p.decay ? o.weight_decay : 0.0;
      if (k && p.m8) {
        this->bk_.adamw_update_8bit(p.values() + lo, p.g + lo, p.m8, p.m_absmax, p.v8, p.v_absmax, k, o.lr, o.beta1, o.beta2,
                                    o.eps, wd, step_, g_mul);
      } else if (k) {
        this->bk_.adamw_update(p.values() + lo, p.g + lo, p.m, p.v, k, o.lr, o.beta1, o.beta2, o.eps, wd, step_, g_mul);
      }
      if constexpr (ParamStore<Bk>::kMaster)  // the compute copy follows
        if (!sharded) this->bk_.cast(p.w, p.master, p.numel());
    }
    if (sharded) gather_values();
    moments_live_ = true;
    this->weights_changed();
    return norm;
  }

  // One sum of squares (in double) over the trainable tensors: it is non-finite exactly when a
  // value is (the squares of fp32 values stay below 1.2e77), and it costs one read of them.
  bool trainable_finite() const override {
    std::vector<const G*> xs;
    std::vector<int64_t> ns;
    for (auto& p : const_cast<OptimizerStore*>(this)->params_)
      if (p.trainable && p.values()) xs.push_back(p.values()), ns.push_back(p.numel());
    if (xs.empty()) return true;
    return std::isfinite(const_cast<Bk&>(this->bk_).sum_squares(xs.data(), ns.data(), int(xs.size())));
  }

  // Paged states (a GPU backend): the plan's optimizer kind is the device's page buffers, and the
  // states themselves are named as host memory.
  MemoryPlan memory_plan() const override {
    MemoryPlan m = LoraStore<Bk>::memory_plan();
    const size_t dev = Bk::paged_optimizer_bytes(eight_bit_);
    KindPlan& k = m[MemKind::Optimizer];
    if (!paged_ || !dev || !k.bytes) return m;
    const size_t host = k.bytes;
    k.entries.clear();
    k.entries.push_back({"AdamW pages on the device (the states, " + std::to_string((host + (1 << 20) - 1) >> 20) +
                             " MiB, in pinned host memory)", dev});
    k.bytes = dev;
    return m;
  }

 void shard_optimizer(int rank, int size, typename ModelBase::ParamGather gather) override {
    if (size < 1 || rank < 0 || rank >= size)
      throw std::runtime_error("shard_optimizer: rank " + std::to_string(rank) + " of " + std::to_string(size) + " is not a rank");
    if (moments_live_ && (rank != shard_rank_ || size != shard_size_))
      throw std::runtime_error("shard_optimizer: the AdamW state is already in use; shard it before the first step or restore");
    shard_rank_ = rank, shard_size_ = size, gather_ = std::move(gather);
    // Nothing is live yet: a block laid out for another slicing starts over (fresh 8-bit codes).
    for (auto& p : this->params_) p.m = p.v = nullptr, p.m8 = p.v8 = nullptr, p.m_absmax = p.v_absmax = nullptr;
    optim_.reset();
    this->optimizer_stale_ = true;
  }
  int optimizer_shards() const override { return shard_size_; }

  std::vector<int64_t> optimizer_shard(const std::string& name) const override {
    const Param<Bk>& t = trainable(name);
    const std::vector<int64_t> b = bounds();
    int64_t start = 0;
    for (const auto& p : this->params_) {
      if (&p == &t) break;
      if (p.trainable) start += p.numel();
    }
    std::vector<int64_t> out(size_t(shard_size_) + 1);
    for (int r = 0; r <= shard_size_; r++) out[size_t(r)] = shard_part(start, t.numel(), b[size_t(r)], b[size_t(r)]).first;
    return out;
  }

 protected:
  // The optimizer block for the current trainable set and format (a relayout keeps the moments of
  // tensors whose format stays). Fresh 8-bit codes are the maps' code of 0, scales 0.
  void lay_out_optimizer(bool eight_bit, int64_t min_8bit, bool paged) {
    if (!this->optimizer_stale_ && eight_bit == eight_bit_ && min_8bit == min_8bit_ && paged == paged_) return;
    if (moments_live_ && eight_bit != eight_bit_ && !this->optimizer_stale_)
      throw std::runtime_error(std::string("the AdamW states are ") + (eight_bit_ ? "8-bit" : "32-bit") + " but this step asks for " +
                               (eight_bit ? "8-bit" : "32-bit") + " states; keep optim the same when resuming");
    this->bk_.page_optimizer(paged);  // where the block below is allocated (paged: pinned host memory)
    assign_parts();
    std::vector<Param<Bk>*> fresh8;
    for (auto& p : this->params_)
      if (p.trainable && eight_bit && p.numel() >= min_8bit && !p.m8 && p.opt_hi > p.opt_lo) fresh8.push_back(&p);
    this->relayout(optim_, MemKind::Optimizer, [&](Carver& c) {
      for (auto& p : this->params_) {
        const int64_t n = p.trainable ? p.numel() : 0, k = p.trainable ? p.opt_hi - p.opt_lo : 0;  // k: this rank's part
        const bool q8 = eight_bit && n >= min_8bit;
        const int64_t blocks = q8 ? q8_blocks(p.opt_lo, p.opt_hi) : 0;
        c.take(p.m, q8 ? 0 : k, p.name + " m");
        c.take(p.v, q8 ? 0 : k, p.name + " v");
        c.take(p.m8, q8 ? k : 0, p.name + " m (8-bit)");
        c.take(p.v8, q8 ? k : 0, p.name + " v (8-bit)");
        c.take(p.m_absmax, blocks, p.name + " m scales");
        c.take(p.v_absmax, blocks, p.name + " v scales");
      }
    }, true);
    if (!this->meta_)
      for (Param<Bk>* p : fresh8) {
        std::vector<uint8_t> z(size_t(p->opt_hi - p->opt_lo), Bk::zero_code_signed());
        this->bk_.upload(p->m8, z.data(), z.size());
        std::fill(z.begin(), z.end(), Bk::zero_code_unsigned());
        this->bk_.upload(p->v8, z.data(), z.size());
      }
    eight_bit_ = eight_bit, min_8bit_ = min_8bit, paged_ = paged;
    this->optimizer_stale_ = false;
  }

  // ZeRO-1: each trainable tensor's part of this rank's slice (the whole tensor when unsharded).
  void assign_parts() {
    const std::vector<int64_t> b = bounds();
    int64_t start = 0;
    for (auto& p : this->params_) {
      if (!p.trainable) {
        p.opt_lo = p.opt_hi = 0;
        continue;
      }
      std::tie(p.opt_lo, p.opt_hi) = shard_part(start, p.numel(), b[size_t(shard_rank_)], b[size_t(shard_rank_) + 1]);
      start += p.numel();
    }
  }
  std::vector<int64_t> bounds() const {
    std::vector<int64_t> numels;
    for (const auto& p : this->params_)
      if (p.trainable) numels.push_back(p.numel());
    return shard_bounds(numels, shard_size_, kQ8Block);
  }

  // After a sharded step: every rank's new values, staged in the flat gradient block at the
  // gradients' places (one contiguous range per rank, the padding between tensors included), are
  // all-gathered, then copied back to the values (and cast to the compute copy).
  void gather_values() {
    if (!gather_) throw std::runtime_error("the optimizer is sharded but has no all-gather (shard_optimizer)");
    G* base = static_cast<G*>(this->grads_.data());
    const int64_t count = int64_t(this->grads_.bytes() / sizeof(G));
    for (auto& p : this->params_)
      if (p.trainable && p.opt_hi > p.opt_lo)
        this->bk_.copy(p.g + p.opt_lo, p.values() + p.opt_lo, size_t(p.opt_hi - p.opt_lo) * sizeof(G));
    // Each bound of the concatenation, as a position in the gradient block.
    const std::vector<int64_t> b = bounds();
    std::vector<int64_t> offsets(b.size(), count);
    for (size_t r = 0; r < b.size(); r++) {
      int64_t start = 0;
      for (auto& p : this->params_) {
        if (!p.trainable) continue;
        if (b[r] < start + p.numel()) {
          offsets[r] = (p.g - base) + (b[r] - start);
          break;
        }
        start += p.numel();
      }
    }
    offsets[0] = 0;
    gather_(typename ModelBase::GradBlock{base, count, sizeof(G) == 8, Bk::device == Device::Cuda}, offsets.data());
    for (auto& p : this->params_) {
      if (!p.trainable) continue;
      this->bk_.copy(p.values(), p.g, size_t(p.numel()) * sizeof(G));
      if constexpr (ParamStore<Bk>::kMaster) this->bk_.cast(p.w, p.master, p.numel());
    }
  }
  bool q8(const Param<Bk>& p) const { return eight_bit_ && p.numel() >= min_8bit_; }

  Block<Bk> optim_;
  int shard_rank_ = 0, shard_size_ = 1;
  typename ModelBase::ParamGather gather_;
  int64_t step_ = 0;
  bool moments_live_ = false;  // a step was taken or moments restored (else get_moments is empty)
  bool eight_bit_ = false;
  int64_t min_8bit_ = 4096;
  bool paged_ = false;

 private:
  Param<Bk>& trainable(const std::string& name) const {
    auto it = this->by_name_.find(name);
    if (it == this->by_name_.end() || !it->second->trainable) throw std::runtime_error("no trainable tensor named \"" + name + "\"");
    return *it->second;
  }
};

}  // namespace sft::model
