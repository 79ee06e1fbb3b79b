// AdamW over the trainable tensors, as torch.optim.AdamW computes it, with global-norm clipping
// (torch.nn.utils.clip_grad_norm_) over the flat gradient block, 32-bit or bitsandbytes-style
// 8-bit blockwise moments in one optimizer block, and the state a checkpoint saves and restores.
#pragma once
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/lora.h"

namespace sft::model {

constexpr int64_t kQ8Block = 256;  // elements per 8-bit moment scale (bitsandbytes' blocksize)

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
    const int64_t n = p.numel();
    if (p.m8) {
      const int64_t blocks = (n + kQ8Block - 1) / kQ8Block;
      out.m8.resize(size_t(n)), out.v8.resize(size_t(n)), out.m_absmax.resize(size_t(blocks)), out.v_absmax.resize(size_t(blocks));
      bk.download(out.m8.data(), p.m8, size_t(n)), bk.download(out.v8.data(), p.v8, size_t(n));
      bk.download(out.m_absmax.data(), p.m_absmax, size_t(blocks) * 4), bk.download(out.v_absmax.data(), p.v_absmax, size_t(blocks) * 4);
    } else if (p.m) {
      out.m.resize(size_t(n)), out.v.resize(size_t(n));
      bk.download_values(out.m.data(), p.m, n), bk.download_values(out.v.data(), p.v, n);
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
    if (!s.m8.empty() != (p.m8 != nullptr)) bad("8-bit and 32-bit states mixed differently than this run lays them out");
    if (p.m8) {
      this->bk_.upload(p.m8, s.m8.data(), size_t(n)), this->bk_.upload(p.v8, s.v8.data(), size_t(n));
      this->bk_.upload(p.m_absmax, s.m_absmax.data(), size_t(blocks) * 4), this->bk_.upload(p.v_absmax, s.v_absmax.data(), size_t(blocks) * 4);
    } else {
      this->bk_.upload_values(p.m, s.m.data(), n), this->bk_.upload_values(p.v, s.v.data(), n);
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
    for (auto& p : this->params_) {
      if (!p.trainable) continue;
      const double wd = p.decay ? o.weight_decay : 0.0;
      if (p.m8) {
        this->bk_.adamw_update_8bit(p.values(), p.g, p.m8, p.m_absmax, p.v8, p.v_absmax, p.numel(), o.lr, o.beta1, o.beta2,
                                    o.eps, wd, step_, g_mul);
      } else {
        this->bk_.adamw_update(p.values(), p.g, p.m, p.v, p.numel(), o.lr, o.beta1, o.beta2, o.eps, wd, step_, g_mul);
      }
      if constexpr (ParamStore<Bk>::kMaster) this->bk_.cast(p.w, p.master, p.numel());  // the compute copy follows
    }
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

 protected:
  // The optimizer block for the current trainable set and format (a relayout keeps the moments of
  // tensors whose format stays). Fresh 8-bit codes are the maps' code of 0, scales 0.
  void lay_out_optimizer(bool eight_bit, int64_t min_8bit, bool paged) {
    if (!this->optimizer_stale_ && eight_bit == eight_bit_ && min_8bit == min_8bit_ && paged == paged_) return;
    if (moments_live_ && eight_bit != eight_bit_ && !this->optimizer_stale_)
      throw std::runtime_error(std::string("the AdamW states are ") + (eight_bit_ ? "8-bit" : "32-bit") + " but this step asks for " +
                               (eight_bit ? "8-bit" : "32-bit") + " states; keep optim the same when resuming");
    this->bk_.page_optimizer(paged);  // where the block below is allocated (paged: pinned host memory)
    std::vector<Param<Bk>*> fresh8;
    for (auto& p : this->params_)
      if (p.trainable && eight_bit && p.numel() >= min_8bit && !p.m8) fresh8.push_back(&p);
    this->relayout(optim_, MemKind::Optimizer, [&](Carver& c) {
      for (auto& p : this->params_) {
        const int64_t n = p.trainable ? p.numel() : 0;
        const bool q8 = eight_bit && n >= min_8bit;
        const int64_t blocks = q8 ? (n + kQ8Block - 1) / kQ8Block : 0;
        c.take(p.m, q8 ? 0 : n, p.name + " m");
        c.take(p.v, q8 ? 0 : n, p.name + " v");
        c.take(p.m8, q8 ? n : 0, p.name + " m (8-bit)");
        c.take(p.v8, q8 ? n : 0, p.name + " v (8-bit)");
        c.take(p.m_absmax, blocks, p.name + " m scales");
        c.take(p.v_absmax, blocks, p.name + " v scales");
      }
    }, true);
    if (!this->meta_)
      for (Param<Bk>* p : fresh8) {
        std::vector<uint8_t> z(size_t(p->numel()), Bk::zero_code_signed());
        this->bk_.upload(p->m8, z.data(), z.size());
        std::fill(z.begin(), z.end(), Bk::zero_code_unsigned());
        this->bk_.upload(p->v8, z.data(), z.size());
      }
    eight_bit_ = eight_bit, min_8bit_ = min_8bit, paged_ = paged;
    this->optimizer_stale_ = false;
  }

  Block<Bk> optim_;
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
