// Native checks, in double precision:
//  1. every CPU op's backward against central finite differences of a random projection of
//     its forward (loss = sum(R * f(x)));
//  2. each architecture variant's full model (every base weight and every LoRA tensor trainable,
//     LoRA dropout on) against finite differences of the model loss;
//  3. LoRA semantics: a model with adapters equals the model with W + (alpha/r) B A merged in;
//  4. the KV cache: logits fed token by token equal the full forward's.
// Prints one line per check and exits non-zero when any check fails.
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cpu/ops.h"
#include "model/model.h"
#include "check.h"

using sft::cpu::attention_backward;
using sft::cpu::attention_forward;
static double dotv(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
  return s;
}

static void check_ops() {
  std::mt19937_64 rng(1234);
  {  // linear
    const int64_t M = 5, K = 7, N = 6;
    Vec x = randn(M * K, rng), W = randn(N * K, rng), b = randn(N, rng), R = randn(M * N, rng);
    auto loss = [&] {
      Vec y(M * N);
      sft::cpu::linear_forward<double>(y.data(), x.data(), W.data(), b.data(), M, K, N);
      return dotv(y, R);
    };
    Vec dx(M * K, 0), dW(N * K, 0), db(N, 0);
    sft::cpu::linear_backward<double>(dx.data(), dW.data(), db.data(), R.data(), x.data(), W.data(), M, K, N);
    report("op linear: d input", rel_err(dx, numeric_grad(x, loss)));
    report("op linear: d weight", rel_err(dW, numeric_grad(W, loss)));
    report("op linear: d bias", rel_err(db, numeric_grad(b, loss)));
  }
  {  // gemm edge shapes and K blocking: compare with a naive product
    const int64_t M = 37, N = 29, K = 1100;
    Vec A = randn(M * K, rng), B = randn(N * K, rng), C(M * N, 0), ref(M * N, 0);
    sft::cpu::linear_forward<double>(C.data(), A.data(), B.data(), nullptr, M, K, N);
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++) ref[m * N + n] += A[m * K + k] * B[n * K + k];
    report("op gemm: 37x29x1100 against a naive product", rel_err(C, ref), 1e-12);
  }
  {  // rmsnorm
    const int64_t N = 4, C = 9;
    Vec x = randn(N * C, rng), w = randn(C, rng), R = randn(N * C, rng), rstd(N);
    auto loss = [&] {
      Vec y(N * C);
      sft::cpu::rmsnorm_forward<double>(y.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5);
      return dotv(y, R);
    };
    loss();
    Vec dx(N * C, 0), dw(C, 0);
    sft::cpu::rmsnorm_backward<double>(dx.data(), dw.data(), R.data(), x.data(), w.data(), rstd.data(), N, C);
    report("op rmsnorm: d input", rel_err(dx, numeric_grad(x, loss)));
    report("op rmsnorm: d weight", rel_err(dw, numeric_grad(w, loss)));
  }
  {  // l2-normalised rows (NormHead)
    const int64_t R_ = 5, C = 6;
    Vec x = randn(R_ * C, rng), Rm = randn(R_ * C, rng);
    auto loss = [&] {
      Vec y(R_ * C);
      sft::cpu::l2norm_rows_forward<double>(y.data(), x.data(), R_, C, 1e-12);
      return dotv(y, Rm);
    };
    Vec dx(R_ * C, 0);
    sft::cpu::l2norm_rows_backward<double>(dx.data(), Rm.data(), x.data(), R_, C, 1e-12);
    report("op l2norm rows: d input", rel_err(dx, numeric_grad(x, loss)));
  }
  {  // rope (two heads in a row of stride 10, offset position p0 = 3)
    const int64_t Bn = 2, T = 3, hd = 4, heads = 2, ld = 10, P = 16;
    Vec cos(P * hd / 2), sin(P * hd / 2);
    for (int64_t p = 0; p < P; p++)
      for (int64_t i = 0; i < hd / 2; i++) {
        double inv = 1.0 / std::pow(10000.0, 2.0 * i / hd);
        cos[p * hd / 2 + i] = std::cos(p * inv);
        sin[p * hd / 2 + i] = std::sin(p * inv);
      }
    Vec x = randn(Bn * T * ld, rng), R = randn(Bn * T * ld, rng);
    auto loss = [&] {
      Vec y = x;
      sft::cpu::rope_forward<double>(y.data(), ld, Bn * T, T, 3, heads, hd, cos.data(), sin.data());
      return dotv(y, R);
    };
    Vec dx = R;
    sft::cpu::rope_backward<double>(dx.data(), ld, Bn * T, T, 3, heads, hd, cos.data(), sin.data());
    report("op rope: d input", rel_err(dx, numeric_grad(x, loss)));
  }
  {  // attention, grouped-query (4 query heads on 2 kv heads)
    const int64_t Bn = 2, T = 5, nh = 4, nkv = 2, hd = 3;
    const int64_t ldq = nh * hd + 1, ldkv = nkv * hd + 2;  // padded strides, like the fused qkv rows
    Vec q = randn(Bn * T * ldq, rng), k = randn(Bn * T * ldkv, rng), v = randn(Bn * T * ldkv, rng);
    Vec R = randn(Bn * T * nh * hd, rng), lse(Bn * nh * T), y(Bn * T * nh * hd);
    auto loss = [&] {
      attention_forward<double>(y.data(), lse.data(), q.data(), ldq, k.data(), v.data(), ldkv, Bn, T, T, 0, nh, nkv, hd);
      return dotv(y, R);
    };
    loss();
    Vec dq(q.size(), 0), dk(k.size(), 0), dv(v.size(), 0);
    attention_backward<double>(dq.data(), dk.data(), dv.data(), R.data(), y.data(), lse.data(), q.data(), ldq,
                               k.data(), v.data(), ldkv, Bn, T, T, 0, nh, nkv, hd);
    report("op attention (GQA 4/2): d q", rel_err(dq, numeric_grad(q, loss)));
    report("op attention (GQA 4/2): d k", rel_err(dk, numeric_grad(k, loss)));
    report("op attention (GQA 4/2): d v", rel_err(dv, numeric_grad(v, loss)));
  }
  {  // swiglu
    const int64_t n = 11;
    Vec g = randn(n, rng, 2.0), u = randn(n, rng), R = randn(n, rng);
    auto loss = [&] {
      Vec y(n);
      sft::cpu::swiglu_forward<double>(y.data(), g.data(), u.data(), n);
      return dotv(y, R);
    };
    Vec dg(n, 0), du(n, 0);
    sft::cpu::swiglu_backward<double>(dg.data(), du.data(), R.data(), g.data(), u.data(), n);
    report("op swiglu: d gate", rel_err(dg, numeric_grad(g, loss)));
    report("op swiglu: d up", rel_err(du, numeric_grad(u, loss)));
  }
  {  // fp32 swiglu (its vector exponential) against the double one, element by element, with gates
     // where the exponential under- or overflows and a length that leaves a scalar tail
    const int64_t n = 203;
    Vec g = randn(n, rng, 4.0), u = randn(n, rng), R = randn(n, rng), dg0 = randn(n, rng), du0 = randn(n, rng);
    const double edge[] = {0.0, -0.0, 87.5, -87.5, 88.6, -88.6, 89.0, -89.0, 104.0, -104.0, 1e-30, -1e-30, 30.0, -30.0};
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) g[i * 13] = edge[i];
    std::vector<float> gf(g.begin(), g.end()), uf(u.begin(), u.end()), Rf(R.begin(), R.end()), yf(n);
    std::vector<float> dgf(dg0.begin(), dg0.end()), duf(du0.begin(), du0.end());
    Vec y(n), dg = dg0, du = du0;
    for (int64_t i = 0; i < n; i++) g[i] = gf[i], u[i] = uf[i], R[i] = Rf[i];  // the same inputs, fp32-exact
    sft::cpu::swiglu_forward<double>(y.data(), g.data(), u.data(), n);
    sft::cpu::swiglu_forward<float>(yf.data(), gf.data(), uf.data(), n);
    sft::cpu::swiglu_backward<double>(dg.data(), du.data(), R.data(), g.data(), u.data(), n);
    sft::cpu::swiglu_backward<float>(dgf.data(), duf.data(), Rf.data(), gf.data(), uf.data(), n);
    double worst[3] = {0, 0, 0};  // per element, relative to the element's scale
    for (int64_t i = 0; i < n; i++) {
      const double e[3] = {std::abs(yf[i] - y[i]) / std::max(std::abs(y[i]), std::abs(u[i]) * 1e-3 + 1e-30),
                           std::abs(dgf[i] - dg[i]) / (std::abs(dg0[i]) + std::abs(R[i] * u[i]) + 1e-30),
                           std::abs(duf[i] - du[i]) / (std::abs(du0[i]) + std::abs(R[i] * g[i]) + 1e-30)};
      for (int k = 0; k < 3; k++) worst[k] = std::isfinite(e[k]) ? std::max(worst[k], e[k]) : 1e30;
    }
    report("fp32 swiglu forward = double, per element (incl. exp under/overflow)", worst[0], 1e-6);
    report("fp32 swiglu backward d gate = double, per element", worst[1], 1e-6);
    report("fp32 swiglu backward d up = double, per element", worst[2], 1e-6);
  }
  {  // embedding (repeated ids accumulate)
    const int64_t V = 6, C = 4, n = 5;
    std::vector<int32_t> ids = {1, 3, 1, 0, 5};
    Vec table = randn(V * C, rng), R = randn(n * C, rng);
    auto loss = [&] {
      Vec y(n * C);
      sft::cpu::embedding_forward<double>(y.data(), ids.data(), table.data(), n, C);
      return dotv(y, R);
    };
    Vec dt(V * C, 0);
    sft::cpu::embedding_backward<double>(dt.data(), R.data(), ids.data(), n, C);
    report("op embedding: d table", rel_err(dt, numeric_grad(table, loss)));
  }
  {  // cross-entropy with an ignored row
    const int64_t N = 4, V = 7;
    std::vector<int32_t> t = {2, -100, 6, 0};
    Vec x = randn(N * V, rng, 3.0);
    const double scale = 0.37;
    auto loss = [&] {
      Vec y = x;
      return scale * sft::cpu::cross_entropy<double>(y.data(), t.data(), N, V, 1.0, false, nullptr);
    };
    Vec d = x;
    int64_t count = 0;
    sft::cpu::cross_entropy<double>(d.data(), t.data(), N, V, scale, true, &count);
    report("op cross-entropy: d logits (ignore index -100)", rel_err(d, numeric_grad(x, loss)));
    if (count != 3) failures++, std::printf("FAIL cross-entropy counted %lld rows, expected 3\n", (long long)count);
  }
}

struct Variant {
  const char* name;
  sft::ModelConfig cfg;
  std::vector<std::string> targets;
};

static std::vector<Variant> variants() {
  auto base = [](sft::Arch a) {
    sft::ModelConfig c;
    c.arch = a;
    c.vocab = 13, c.hidden = 8, c.intermediate = 12, c.layers = 2, c.heads = 2, c.kv_heads = 2;
    c.rope_theta = 10000, c.norm_eps = 1e-6;
    return c;
  };
  std::vector<Variant> v;
  {
    auto c = base(sft::Arch::Llama);
    c.kv_heads = 1;  // grouped-query
    v.push_back({"llama (GQA 2/1)", c, {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}});
  }
  v.push_back({"baichuan (W_pack)", base(sft::Arch::Baichuan), {"W_pack", "o_proj", "gate_proj", "up_proj", "down_proj"}});
  {
    auto c = base(sft::Arch::Baichuan2);
    c.norm_head = true;
    v.push_back({"baichuan2 (NormHead)", c, {"W_pack", "o_proj", "gate_proj", "up_proj", "down_proj"}});
  }
  {
    auto c = base(sft::Arch::Qwen2);
    c.qkv_bias = true, c.tie_embeddings = true, c.kv_heads = 1, c.rope_theta = 1e6;
    v.push_back({"qwen2 (qkv bias, tied head)", c, {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}});
  }
  return v;
}

static void randomize(sft::ModelBase& m, std::mt19937_64& rng) {
  for (const auto& p : m.base_params()) {
    int64_t n = 1;
    for (auto d : p.shape) n *= d;
    bool is_norm = p.name.find("norm") != std::string::npos;
    Vec v = randn(n, rng, is_norm ? 0.1 : 0.3);
    if (is_norm)
      for (auto& x : v) x += 1.0;
    m.set_tensor(p.name, v.data(), n);
  }
}

static void check_models() {
  for (const auto& var : variants()) {
    std::mt19937_64 rng(99);
    auto m = sft::make_model(var.cfg, /*f64=*/true);
    randomize(*m, rng);
    sft::LoraOptions lo;
    lo.targets = var.targets;
    lo.rank = 2, lo.alpha = 3, lo.dropout = 0.25, lo.seed = 7;
    for (const auto& p : m->add_lora(lo)) {  // B = 0 at init would hide A's gradient: randomise it
      int64_t n = p.shape[0] * p.shape[1];
      Vec v = randn(n, rng, 0.3);
      m->set_tensor(p.name, v.data(), n);
    }
    m->set_base_trainable(true);
    m->set_head_chunk_rows(3);  // lm_head + loss over chunks of 3 rows (the last one partial)
    const int64_t B = 2, T = 5;
    std::vector<int32_t> ids = {1, 5, 7, 2, 12, 3, 3, 9, 0, 11};
    std::vector<int32_t> labels = {5, 7, -100, 12, 4, -100, 9, 0, 11, 2};
    const int64_t step = 3;
    const double scale = 0.25;
    m->zero_grad();
    int64_t count = 0;
    m->forward_backward(ids.data(), labels.data(), B, T, scale, step, &count);
    double worst = 0;
    std::string worst_name;
    for (const auto& p : m->trainable_params()) {
      Vec w = m->get_tensor(p.name);
      Vec analytic = m->get_grad(p.name);
      auto loss = [&] {
        m->set_tensor(p.name, w.data(), int64_t(w.size()));
        return scale * m->forward_loss(ids.data(), labels.data(), B, T, step, /*training=*/true, nullptr);
      };
      Vec numeric = numeric_grad(w, loss);
      m->set_tensor(p.name, w.data(), int64_t(w.size()));
      double e = rel_err(analytic, numeric);
      if (!(e < worst) ) worst = std::max(worst, e), worst_name = p.name;
      if (!(e < kTol)) report(std::string(var.name) + ": " + p.name, e);
    }
    report(std::string(var.name) + ": all grads (worst " + worst_name + ")", worst);
  }
}

// A LoRA-adapted model must equal its merged form W + (alpha / r) B A (PEFT's definition).
static void check_lora_merge() {
  for (const auto& var : variants()) {
    std::mt19937_64 rng(5);
    auto a = sft::make_model(var.cfg, true);
    auto b = sft::make_model(var.cfg, true);
    randomize(*a, rng);
    for (const auto& p : a->base_params()) {
      Vec w = a->get_tensor(p.name);
      b->set_tensor(p.name, w.data(), int64_t(w.size()));
    }
    sft::LoraOptions lo;
    lo.targets = var.targets;
    lo.rank = 3, lo.alpha = 5, lo.seed = 1;
    for (const auto& p : a->add_lora(lo)) {
      int64_t n = p.shape[0] * p.shape[1];
      Vec v = randn(n, rng, 0.3);
      a->set_tensor(p.name, v.data(), n);
    }
    // merge each adapter into b's checkpoint tensor of the same module
    for (const auto& p : a->trainable_params()) {
      const std::string suffix = ".lora_A.weight";
      if (p.name.size() < suffix.size() || p.name.compare(p.name.size() - suffix.size(), suffix.size(), suffix)) continue;
      const std::string mod = p.name.substr(0, p.name.size() - suffix.size());
      Vec A = a->get_tensor(mod + ".lora_A.weight"), Bm = a->get_tensor(mod + ".lora_B.weight");
      const std::string wname = mod + ".weight";
      Vec W = b->get_tensor(wname);
      const int64_t r = lo.rank, in = int64_t(A.size()) / r, out = int64_t(Bm.size()) / r;
      for (int64_t o = 0; o < out; o++)
        for (int64_t i = 0; i < in; i++) {
          double s = 0;
          for (int64_t k = 0; k < r; k++) s += Bm[o * r + k] * A[k * in + i];
          W[o * in + i] += lo.alpha / double(r) * s;
        }
      b->set_tensor(wname, W.data(), int64_t(W.size()));
    }
    std::vector<int32_t> ids = {1, 5, 7, 2, 12, 3};
    auto la = a->logits(ids.data(), 2, 3), lb = b->logits(ids.data(), 2, 3);
    // The check is only meaningful when the adapters change the output noticeably.
    auto base = sft::make_model(var.cfg, true);
    for (const auto& p : a->base_params()) {
      Vec w = a->get_tensor(p.name);
      base->set_tensor(p.name, w.data(), int64_t(w.size()));
    }
    auto l0 = base->logits(ids.data(), 2, 3);
    const double effect = rel_err(Vec(la.begin(), la.end()), Vec(l0.begin(), l0.end()));
    if (effect < 1e-2) failures++, std::printf("FAIL %s: LoRA barely changes the logits (%.2e)\n", var.name, effect);
    report(std::string(var.name) + ": LoRA equals merged W + (alpha/r) B A", rel_err(Vec(la.begin(), la.end()), Vec(lb.begin(), lb.end())), 1e-6);
  }
}

static void check_kv_cache() {
  for (const auto& var : variants()) {
    std::mt19937_64 rng(11);
    auto m = sft::make_model(var.cfg, true);
    randomize(*m, rng);
    std::vector<int32_t> ids = {4, 8, 1, 12, 0, 7, 7};
    const int64_t T = int64_t(ids.size()), V = var.cfg.vocab;
    auto full = m->logits(ids.data(), 1, T);
    // prefill 3 tokens, then one at a time
    Vec got, want;
    m->reset_cache();
    auto l = m->feed(ids.data(), 3);
    got.insert(got.end(), l.begin(), l.end());
    want.insert(want.end(), full.begin() + 2 * V, full.begin() + 3 * V);
    for (int64_t t = 3; t < T; t++) {
      l = m->feed(ids.data() + t, 1);
      got.insert(got.end(), l.begin(), l.end());
      want.insert(want.end(), full.begin() + t * V, full.begin() + (t + 1) * V);
    }
    report(std::string(var.name) + ": KV-cache decode equals full forward", rel_err(got, want), 1e-6);
    // A shared prefix reused: feed 3, branch A (2 tokens), truncate back to 3, branch B.
    std::vector<int32_t> b_ids = {ids[0], ids[1], ids[2], 9, 1};
    auto b_full = m->logits(b_ids.data(), 1, 5);
    m->reset_cache();
    m->feed(ids.data(), 3);
    m->feed(ids.data() + 3, 2);
    m->truncate_cache(3);
    auto b_got = m->feed(b_ids.data() + 3, 2);
    report(std::string(var.name) + ": truncate_cache then a new branch equals its full forward",
           rel_err(Vec(b_got.begin(), b_got.end()), Vec(b_full.begin() + 4 * V, b_full.end())), 1e-6);
    // decode(): sequences of different lengths in slots 1, 3 and 4, one token each in one step, with
    // lm_head in chunks of 2 rows (fewer than the step's rows): each row equals that sequence's full
    // forward at its last position, and the slots' lengths advance by one.
    m->set_head_chunk_rows(2);
    const int32_t slots[3] = {1, 3, 4};
    const std::vector<int32_t> seqs[3] = {{4, 8}, {1, 12, 0, 7}, {7, 7, 3}};
    int32_t next[3];
    Vec dgot, dwant;
    for (int i = 0; i < 3; i++) {
      m->feed(seqs[i].data(), int64_t(seqs[i].size()), slots[i]);
      next[i] = int32_t(2 + i);
      std::vector<int32_t> whole = seqs[i];
      whole.push_back(next[i]);
      auto f = m->logits(whole.data(), 1, int64_t(whole.size()));
      dwant.insert(dwant.end(), f.end() - V, f.end());
    }
    auto d = m->decode(slots, next, 3);
    dgot.assign(d.begin(), d.end());
    report(std::string(var.name) + ": decode() of 3 slots equals their full forwards", rel_err(dgot, dwant), 1e-6);
    for (int i = 0; i < 3; i++)
      if (m->cache_length(slots[i]) != int64_t(seqs[i].size()) + 1) failures++, std::printf("FAIL %s: slot %d length\n", var.name, slots[i]);
    m->set_head_chunk_rows(0);
  }
}

// The Llama-family variants plus a tiny Bloom (its own checks live in test_bloom.cpp).
static std::vector<Variant> variants_with_bloom() {
  auto vars = variants();
  sft::ModelConfig c;
  c.arch = sft::Arch::Bloom;
  c.vocab = 13, c.hidden = 8, c.intermediate = 32, c.layers = 2, c.heads = 2, c.kv_heads = 2;
  c.norm_eps = 1e-5, c.tie_embeddings = true;
  vars.push_back({"bloom", c, {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}});
  return vars;
}

// Prompt tuning: gradients of the virtual-token embeddings (and of every base weight, with the
// virtual positions in the sequence) by finite differences; cached generation equals full forwards.
static void check_prompt_tuning() {
  const auto vars = variants_with_bloom();
  for (const auto& var : vars) {
    std::mt19937_64 rng(17);
    auto m = sft::make_model(var.cfg, true);
    randomize(*m, rng);
    const int64_t nv = 3;
    Vec init = randn(nv * var.cfg.hidden, rng, 0.5);
    std::vector<float> init_f(init.begin(), init.end());
    m->add_prompt_tuning(nv, init_f.data(), 0);
    m->set_base_trainable(true);
    std::vector<int32_t> ids = {1, 5, 7, 2, 12, 3, 3, 9};
    std::vector<int32_t> labels = {5, 7, 2, -100, 3, 9, 0, 11};
    m->zero_grad();
    m->forward_backward(ids.data(), labels.data(), 2, 4, 0.5, 0, nullptr);
    double worst = 0;
    for (const auto& p : m->trainable_params()) {
      Vec w = m->get_tensor(p.name), g = m->get_grad(p.name);
      auto loss = [&] {
        m->set_tensor(p.name, w.data(), int64_t(w.size()));
        return 0.5 * m->forward_loss(ids.data(), labels.data(), 2, 4, 0, true, nullptr);
      };
      Vec num = numeric_grad(w, loss);
      m->set_tensor(p.name, w.data(), int64_t(w.size()));
      worst = std::max(worst, rel_err(g, num));
    }
    report(std::string(var.name) + ": prompt tuning, all grads", worst);
    // Cached: the virtual tokens go in with the first feed; logits() drops their positions.
    auto full = m->logits(ids.data(), 1, 4);
    const int64_t V = var.cfg.vocab;
    m->reset_cache();
    Vec got, want(full.begin() + V, full.end());
    auto l = m->feed(ids.data(), 2);
    got.insert(got.end(), l.begin(), l.end());
    for (int t = 2; t < 4; t++) {
      l = m->feed(ids.data() + t, 1);
      got.insert(got.end(), l.begin(), l.end());
    }
    report(std::string(var.name) + ": prompt tuning, KV cache equals full forward", rel_err(got, want), 1e-6);
    if (m->cache_length() != nv + 4) failures++, std::printf("FAIL cache length %lld, expected %lld\n", (long long)m->cache_length(), (long long)(nv + 4));
  }
}

// Gradient checkpointing recomputes each layer in backward: the loss and every gradient must equal
// the run that kept all activations (same dropout masks), bit for bit.
static void check_checkpointing() {
  const auto vars = variants_with_bloom();
  for (const auto& var : vars) {
    std::vector<Vec> grads[2];
    double losses[2];
    for (int ck = 0; ck < 2; ck++) {
      std::mt19937_64 rng(23);
      auto m = sft::make_model(var.cfg, true);
      randomize(*m, rng);
      sft::LoraOptions lo;
      lo.targets = var.targets;
      lo.rank = 2, lo.alpha = 3, lo.dropout = 0.3, lo.seed = 5;
      for (const auto& p : m->add_lora(lo)) {
        Vec v = randn(p.shape[0] * p.shape[1], rng, 0.3);
        m->set_tensor(p.name, v.data(), int64_t(v.size()));
      }
      m->set_base_trainable(true);
      m->set_gradient_checkpointing(ck == 1);
      std::vector<int32_t> ids = {1, 5, 7, 2, 12, 3, 3, 9, 0, 11};
      std::vector<int32_t> labels = {5, 7, -100, 12, 4, -100, 9, 0, 11, 2};
      m->zero_grad();
      losses[ck] = m->forward_backward(ids.data(), labels.data(), 2, 5, 0.1, 4, nullptr);
      for (const auto& p : m->trainable_params()) grads[ck].push_back(m->get_grad(p.name));
    }
    bool same = losses[0] == losses[1] && grads[0] == grads[1];
    if (!same) failures++;
    std::printf("%s %s: gradient checkpointing gives the same loss and gradients\n", same ? "ok  " : "FAIL", var.name);
  }
}

// lm_head + cross-entropy in chunks of rows (model/decoder.h, head_loss) against one chunk holding
// every row: the loss, every gradient (full fine-tuning: lm_head, tied embeddings, NormHead's raw
// rows, biases; LoRA; prompt tuning), the eval loss and logits(), in double (1e-12) and fp32 (1e-6).
// Chunks of 3 rows over 2 x (3 virtual + 5) rows: a partial last chunk, and two chunks with every
// row ignored, which head_loss skips (rows 0-2: row 0's virtual tokens; 6-8: row 0's last two
// positions, -100, and row 1's first virtual token).
static void check_head_chunks() {
  for (const auto& var : variants_with_bloom()) {
    for (bool f64 : {true, false}) {
      double loss[2] = {0, 0}, eval[2] = {0, 0};
      int64_t count[2] = {0, 0};
      std::vector<Vec> grads[2];
      Vec logits[2];
      for (int chunked = 0; chunked < 2; chunked++) {
        std::mt19937_64 rng(31);
        auto m = f64 ? sft::make_model(var.cfg, true) : sft::make_model(var.cfg, sft::ModelOptions{sft::Device::Cpu, sft::Compute::F32, false});
        randomize(*m, rng);
        sft::LoraOptions lo;
        lo.targets = var.targets;
        lo.rank = 2, lo.alpha = 3, lo.dropout = 0.2, lo.seed = 5;
        for (const auto& p : m->add_lora(lo)) {
          Vec v = randn(p.shape[0] * p.shape[1], rng, 0.3);
          m->set_tensor(p.name, v.data(), int64_t(v.size()));
        }
        Vec init = randn(3 * var.cfg.hidden, rng, 0.5);
        std::vector<float> init_f(init.begin(), init.end());
        m->add_prompt_tuning(3, init_f.data(), 0);
        m->set_base_trainable(true);
        m->set_head_chunk_rows(chunked ? 3 : 1000);
        std::vector<int32_t> ids = {1, 5, 7, 2, 12, 3, 3, 9, 0, 11};
        std::vector<int32_t> labels = {5, 7, -100, -100, -100, 3, 9, 0, 11, 2};
        m->zero_grad();
        loss[chunked] = m->forward_backward(ids.data(), labels.data(), 2, 5, 0.3, 2, &count[chunked]);
        for (const auto& p : m->trainable_params()) grads[chunked].push_back(m->get_grad(p.name));
        eval[chunked] = m->forward_loss(ids.data(), labels.data(), 2, 5, 0, false, nullptr);
        const auto l = m->logits(ids.data(), 2, 5);
        logits[chunked] = Vec(l.begin(), l.end());
      }
      const double tol = f64 ? 1e-12 : 1e-6;
      double worst = std::max(std::fabs(loss[1] - loss[0]) / std::fabs(loss[0]), std::fabs(eval[1] - eval[0]) / std::fabs(eval[0]));
      for (size_t i = 0; i < grads[0].size(); i++) worst = std::max(worst, rel_err(grads[1][i], grads[0][i]));
      worst = std::max(worst, rel_err(logits[1], logits[0]));
      if (count[0] != 7 || count[1] != 7) failures++, std::printf("FAIL %s: counted %lld / %lld rows, expected 7\n", var.name, (long long)count[0], (long long)count[1]);
      report(std::string(var.name) + (f64 ? " (double)" : " (fp32)") + ": lm_head in chunks of 3 rows equals one chunk (loss, " +
                 std::to_string(grads[0].size()) + " gradients, eval loss, logits)", worst, tol);
    }
  }
}

void check_quant();  // test_quant.cpp
void check_bloom();  // test_bloom.cpp
void check_gemm_isas();  // test_gemm.cpp
void check_inference_panels();  // test_inference_panels.cpp
void check_attention();  // test_attention.cpp
void check_threads();  // test_threads.cpp
void check_zero_shard();  // test_zero_shard.cpp
void check_bf16_ops();  // test_bf16_ops.cpp
void check_bf16_models();  // test_bf16_models.cpp
void check_tcp_bootstrap();  // test_tcp_bootstrap.cpp

int main() {
  check_tcp_bootstrap();  // first: it forks, before any thread pool exists
  check_threads();
  check_zero_shard();
  check_quant();
  check_gemm_isas();
  check_inference_panels();
  check_ops();
  check_attention();
  check_bf16_ops();
  check_models();
  check_lora_merge();
  check_kv_cache();
  check_prompt_tuning();
  check_checkpointing();
  check_head_chunks();
  check_bloom();
  check_bf16_models();
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
  return failures ? 1 : 0;
}
