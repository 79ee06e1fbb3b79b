// Native checks of Bloom, in double precision (called from test_grad.cpp's main):
//  1. its new ops against central finite differences: LayerNorm (input, weight, bias), the
//     tanh-form GELU, ALiBi attention with interleaved heads (q, k, v) for 6 heads (not a power
//     of two); the slopes and the attention's forward against hand-written values / a naive loop;
//  2. the whole model (every base weight and every LoRA tensor trainable, LoRA dropout on) against
//     finite differences of the model loss, tied and untied head;
//  3. LoRA equals the merged W + (alpha/r) B A (query_key_value in its interleaved row order);
//  4. KV-cache decoding and truncation equal the full forward;
//  5. checkpoints without the "transformer." prefix load; LoRA target names are checked.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "cpu/ops.h"
#include "model/model.h"

namespace {

void fail(const std::string& what) {
  failures++;
  std::printf("FAIL %s\n", what.c_str());
}

double dotv(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
  return s;
}

void check_bloom_ops() {
  std::mt19937_64 rng(4321);
  {  // layernorm
    const int64_t N = 4, C = 9;
    Vec x = randn(N * C, rng, 2.0), w = randn(C, rng), b = randn(C, rng), R = randn(N * C, rng), mean(N), rstd(N);
    for (auto& v : x) v += 0.7;  // a non-zero mean, so centring matters
    auto loss = [&] {
      Vec y(N * C);
      sft::cpu::layernorm_forward<double>(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5);
      return dotv(y, R);
    };
    loss();
    Vec dx(N * C, 0), dw(C, 0), db(C, 0);
    sft::cpu::layernorm_backward<double>(dx.data(), dw.data(), db.data(), R.data(), x.data(), w.data(), mean.data(),
                                         rstd.data(), N, C);
    report("op layernorm: d input", rel_err(dx, numeric_grad(x, loss)));
    report("op layernorm: d weight", rel_err(dw, numeric_grad(w, loss)));
    report("op layernorm: d bias", rel_err(db, numeric_grad(b, loss)));
    // forward against its definition, row 0: w (x - mean) / sqrt(biased var + eps) + b
    Vec y(N * C);
    sft::cpu::layernorm_forward<double>(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5);
    double mu = 0, var = 0;
    for (int64_t c = 0; c < C; c++) mu += x[c] / C;
    for (int64_t c = 0; c < C; c++) var += (x[c] - mu) * (x[c] - mu) / C;
    Vec want(C), got(y.begin(), y.begin() + C);
    for (int64_t c = 0; c < C; c++) want[c] = w[c] * (x[c] - mu) / std::sqrt(var + 1e-5) + b[c];
    report("op layernorm: forward equals its definition", rel_err(got, want), 1e-14);
  }
  {  // gelu, tanh form
    const int64_t n = 13;
    Vec x = randn(n, rng, 2.0), R = randn(n, rng);
    auto loss = [&] {
      Vec y(n);
      sft::cpu::gelu_tanh_forward<double>(y.data(), x.data(), n);
      return dotv(y, R);
    };
    Vec dx(n, 0);
    sft::cpu::gelu_tanh_backward<double>(dx.data(), R.data(), x.data(), n);
    report("op gelu (tanh form): d input", rel_err(dx, numeric_grad(x, loss)));
    Vec y(n), want(n);
    sft::cpu::gelu_tanh_forward<double>(y.data(), x.data(), n);
    for (int64_t i = 0; i < n; i++)
      want[i] = 0.5 * x[i] * (1 + std::tanh(0.79788456 * x[i] * (1 + 0.044715 * x[i] * x[i])));
    report("op gelu (tanh form): forward equals 0.5x(1+tanh(0.79788456x(1+0.044715x^2)))", rel_err(y, want), 1e-15);
  }
  {  // ALiBi slopes, written out by hand from the definition
    auto slopes = [](int n) {
      Vec s(size_t(n), 0);
      sft::cpu::alibi_slopes<double>(s.data(), n);
      return s;
    };
    // n = 6: p = 4, base 2^-2 -> 1/4, 1/16, 1/64, 1/256; then base 2^-1 at odd powers 1, 3.
    report("alibi slopes, 6 heads", rel_err(slopes(6), {0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125}), 1e-15);
    report("alibi slopes, 8 heads (2^-1 .. 2^-8)",
           rel_err(slopes(8), {0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625}), 1e-15);
    // n = 12: p = 8, base 2^-1 (powers 1..8), then 2^-0.5 at powers 1, 3, 5, 7.
    Vec want12 = {0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625,
                  std::pow(2.0, -0.5), std::pow(2.0, -1.5), std::pow(2.0, -2.5), std::pow(2.0, -3.5)};
    report("alibi slopes, 12 heads", rel_err(slopes(12), want12), 1e-15);
    report("alibi slopes, 1 head (2^-8)", rel_err(slopes(1), {0.00390625}), 1e-15);
    std::vector<float> f(6);
    sft::cpu::alibi_slopes<float>(f.data(), 6);
    report("alibi slopes, 6 heads in float", rel_err(Vec(f.begin(), f.end()), slopes(6)), 1e-7);
  }
  {  // ALiBi attention on Bloom's fused, per-head interleaved rows: 6 heads of 3
    const int64_t Bn = 2, T = 5, nh = 6, hd = 3, ld = 3 * nh * hd, hs = 3 * hd;
    Vec qkv = randn(Bn * T * ld, rng), R = randn(Bn * T * nh * hd, rng), lse(Bn * nh * T), slopes(nh);
    sft::cpu::alibi_slopes<double>(slopes.data(), nh);
    auto fwd = [&](Vec& y, double* a) {
      sft::cpu::alibi_attention_forward<double>(y.data(), a, qkv.data(), ld, hs, qkv.data() + hd, qkv.data() + 2 * hd,
                                                ld, hs, slopes.data(), Bn, T, T, 0, nh, hd);
    };
    // A naive loop of the definition: softmax_j<=i(q_i.k_j / sqrt(d) + slope_h * j) v_j.
    Vec y(Bn * T * nh * hd), want(Bn * T * nh * hd, 0);
    fwd(y, nullptr);
    for (int64_t b = 0; b < Bn; b++)
      for (int64_t h = 0; h < nh; h++)
        for (int64_t i = 0; i < T; i++) {
          const double* q = &qkv[(b * T + i) * ld + h * hs];
          Vec s(i + 1);
          double mx = -1e300, sum = 0;
          for (int64_t j = 0; j <= i; j++) {
            const double* k = &qkv[(b * T + j) * ld + h * hs + hd];
            double d = 0;
            for (int64_t e = 0; e < hd; e++) d += q[e] * k[e];
            s[j] = d / std::sqrt(double(hd)) + slopes[h] * double(j);
            mx = std::max(mx, s[j]);
          }
          for (auto& v : s) sum += (v = std::exp(v - mx));
          for (int64_t j = 0; j <= i; j++)
            for (int64_t e = 0; e < hd; e++)
              want[(b * T + i) * nh * hd + h * hd + e] += s[j] / sum * qkv[(b * T + j) * ld + h * hs + 2 * hd + e];
        }
    report("op alibi attention (6 heads, interleaved qkv): forward equals a naive loop", rel_err(y, want), 1e-13);
    Vec out(Bn * T * nh * hd);
    auto loss = [&] {
      fwd(out, lse.data());
      return dotv(out, R);
    };
    loss();
    Vec dqkv(qkv.size(), 0);
    sft::cpu::alibi_attention_backward<double>(dqkv.data(), dqkv.data() + hd, dqkv.data() + 2 * hd, R.data(),
                                               out.data(), lse.data(), qkv.data(), ld, hs, qkv.data() + hd,
                                               qkv.data() + 2 * hd, ld, hs, slopes.data(), Bn, T, T, 0, nh, hd);
    Vec num = numeric_grad(qkv, loss);
    // Split the check per q / k / v column block so a wrong block shows by name.
    const char* part[] = {"q", "k", "v"};
    for (int j = 0; j < 3; j++) {
      Vec a, n;
      for (int64_t r = 0; r < Bn * T; r++)
        for (int64_t h = 0; h < nh; h++)
          for (int64_t e = 0; e < hd; e++) {
            const size_t i = size_t(r * ld + h * hs + j * hd + e);
            a.push_back(dqkv[i]), n.push_back(num[i]);
          }
      report(std::string("op alibi attention (6 heads, interleaved qkv): d ") + part[j], rel_err(a, n));
    }
  }
}

sft::ModelConfig bloom_config(bool tied) {
  sft::ModelConfig c;
  c.arch = sft::Arch::Bloom;
  c.vocab = 13, c.hidden = 12, c.intermediate = 48, c.layers = 2, c.heads = 6, c.kv_heads = 6;
  c.norm_eps = 1e-5, c.tie_embeddings = tied;
  return c;
}

const std::vector<std::string> kTargets = {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"};

void randomize(sft::ModelBase& m, std::mt19937_64& rng) {
  for (const auto& p : m.base_params()) {
    int64_t n = 1;
    for (auto d : p.shape) n *= d;
    const bool norm_w = p.name.size() > 12 && (p.name.find("layernorm.weight") != std::string::npos || p.name.find("ln_f.weight") != std::string::npos);
    Vec v = randn(n, rng, norm_w ? 0.1 : 0.3);
    if (norm_w)
      for (auto& x : v) x += 1.0;
    m.set_tensor(p.name, v.data(), n);
  }
}

void randomize_lora(sft::ModelBase& m, const std::vector<sft::ParamInfo>& added, std::mt19937_64& rng) {
  for (const auto& p : added) {  // B = 0 at init would hide A's gradient: randomise both
    const int64_t n = p.shape[0] * p.shape[1];
    Vec v = randn(n, rng, 0.3);
    m.set_tensor(p.name, v.data(), n);
  }
}

void check_bloom_model(bool tied) {
  const std::string name = tied ? "bloom (6 heads, tied head)" : "bloom (6 heads, untied head)";
  std::mt19937_64 rng(77);
  auto m = sft::make_model(bloom_config(tied), /*f64=*/true);
  randomize(*m, rng);
  sft::LoraOptions lo;
  lo.targets = kTargets;
  lo.rank = 2, lo.alpha = 3, lo.dropout = 0.25, lo.seed = 7;
  randomize_lora(*m, m->add_lora(lo), rng);
  m->set_base_trainable(true);
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
  int checked = 0;
  for (const auto& p : m->trainable_params()) {
    Vec w = m->get_tensor(p.name);
    Vec analytic = m->get_grad(p.name);
    auto loss = [&] {
      m->set_tensor(p.name, w.data(), int64_t(w.size()));
      return scale * m->forward_loss(ids.data(), labels.data(), B, T, step, /*training=*/true, nullptr);
    };
    Vec numeric = numeric_grad(w, loss);
    m->set_tensor(p.name, w.data(), int64_t(w.size()));
    const double e = rel_err(analytic, numeric);
    if (!(e <= worst)) worst = e, worst_name = p.name;
    if (!(e < kTol)) report(name + ": " + p.name, e);
    checked++;
  }
  // 3 embedding/final-norm tensors + 2 norms, 12 layer tensors (4 linears w+b, 2 norms w+b) x 2, 8 LoRA x 2
  const int want = 1 + 2 + 2 + 12 * 2 + 8 * 2 + (tied ? 0 : 1);
  if (checked != want) failures++, std::printf("FAIL %s: %d trainable tensors, expected %d\n", name.c_str(), checked, want);
  report(name + ": all grads (worst " + worst_name + ")", worst);
}

// A LoRA-adapted model must equal its merged form W + (alpha / r) B A (PEFT's definition); for
// query_key_value, B's rows are W's rows (interleaved per head) one for one.
void check_bloom_lora_merge() {
  std::mt19937_64 rng(5);
  const auto cfg = bloom_config(true);
  auto a = sft::make_model(cfg, true), b = sft::make_model(cfg, true), base = sft::make_model(cfg, true);
  randomize(*a, rng);
  for (const auto& p : a->base_params()) {
    Vec w = a->get_tensor(p.name);
    b->set_tensor(p.name, w.data(), int64_t(w.size()));
    base->set_tensor(p.name, w.data(), int64_t(w.size()));
  }
  sft::LoraOptions lo;
  lo.targets = kTargets;
  lo.rank = 3, lo.alpha = 5, lo.seed = 1;
  randomize_lora(*a, a->add_lora(lo), rng);
  for (const auto& p : a->trainable_params()) {
    const std::string suffix = ".lora_A.weight";
    if (p.name.size() < suffix.size() || p.name.compare(p.name.size() - suffix.size(), suffix.size(), suffix)) continue;
    const std::string mod = p.name.substr(0, p.name.size() - suffix.size());
    Vec A = a->get_tensor(mod + ".lora_A.weight"), Bm = a->get_tensor(mod + ".lora_B.weight");
    Vec W = b->get_tensor(mod + ".weight");
    const int64_t r = lo.rank, in = int64_t(A.size()) / r, out = int64_t(Bm.size()) / r;
    for (int64_t o = 0; o < out; o++)
      for (int64_t i = 0; i < in; i++) {
        double s = 0;
        for (int64_t k = 0; k < r; k++) s += Bm[o * r + k] * A[k * in + i];
        W[o * in + i] += lo.alpha / double(r) * s;
      }
    b->set_tensor(mod + ".weight", W.data(), int64_t(W.size()));
  }
  std::vector<int32_t> ids = {1, 5, 7, 2, 12, 3};
  auto la = a->logits(ids.data(), 2, 3), lb = b->logits(ids.data(), 2, 3), l0 = base->logits(ids.data(), 2, 3);
  const double effect = rel_err(Vec(la.begin(), la.end()), Vec(l0.begin(), l0.end()));
  if (effect < 1e-2) failures++, std::printf("FAIL bloom: LoRA barely changes the logits (%.2e)\n", effect);
  report("bloom: LoRA equals merged W + (alpha/r) B A", rel_err(Vec(la.begin(), la.end()), Vec(lb.begin(), lb.end())), 1e-6);
  // The engine's own merge gives the same weights and drops the adapters.
  a->merge_lora();
  if (!a->trainable_params().empty()) fail("bloom: merge_lora left trainable adapter tensors");
  double werr = 0;
  for (const auto& p : b->base_params()) werr = std::max(werr, rel_err(a->get_tensor(p.name), b->get_tensor(p.name)));
  report("bloom: merge_lora equals W + (alpha/r) B A", werr, 1e-14);
  auto lm = a->logits(ids.data(), 2, 3);
  report("bloom: merged model's logits equal the adapted model's", rel_err(Vec(lm.begin(), lm.end()), Vec(la.begin(), la.end())), 1e-6);
}

void check_bloom_kv_cache() {
  std::mt19937_64 rng(11);
  const auto cfg = bloom_config(true);
  auto m = sft::make_model(cfg, true);
  randomize(*m, rng);
  std::vector<int32_t> ids = {4, 8, 1, 12, 0, 7, 7};
  const int64_t T = int64_t(ids.size()), V = cfg.vocab;
  auto full = m->logits(ids.data(), 1, T);
  Vec got, want;
  m->reset_cache();
  auto l = m->feed(ids.data(), 3);  // prefill 3 tokens, then one at a time
  got.insert(got.end(), l.begin(), l.end());
  want.insert(want.end(), full.begin() + 2 * V, full.begin() + 3 * V);
  for (int64_t t = 3; t < T; t++) {
    l = m->feed(ids.data() + t, 1);
    got.insert(got.end(), l.begin(), l.end());
    want.insert(want.end(), full.begin() + t * V, full.begin() + (t + 1) * V);
  }
  report("bloom: KV-cache decode equals full forward", rel_err(got, want), 1e-6);
  std::vector<int32_t> b_ids = {ids[0], ids[1], ids[2], 9, 1};
  auto b_full = m->logits(b_ids.data(), 1, 5);
  m->reset_cache();
  m->feed(ids.data(), 3);
  m->feed(ids.data() + 3, 2);
  m->truncate_cache(3);
  auto b_got = m->feed(b_ids.data() + 3, 2);
  report("bloom: truncate_cache then a new branch equals its full forward",
         rel_err(Vec(b_got.begin(), b_got.end()), Vec(b_full.begin() + 4 * V, b_full.end())), 1e-6);
}

void check_bloom_names() {
  auto m = sft::make_model(bloom_config(true), false);
  // BloomModel checkpoints omit "transformer.": loading under either name fills the same tensor.
  int loaded = 0;
  for (const auto& p : m->base_params()) {
    int64_t n = 1;
    for (auto d : p.shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; i++) v[i] = float(loaded) + float(i) * 1e-3f;
    const std::string prefix = "transformer.";
    if (p.name.compare(0, prefix.size(), prefix)) fail("bloom: base tensor " + p.name + " lacks the transformer. prefix");
    m->load_tensor(p.name.substr(prefix.size()), v.data(), sft::DType::F32, p.shape);
    const Vec back = m->get_tensor(p.name);
    if (rel_err(back, Vec(v.begin(), v.end())) != 0) fail("bloom: " + p.name + " loaded without prefix reads back differently");
    loaded++;
  }
  if (!m->missing_tensors().empty()) fail("bloom: tensors loaded without prefix still reported missing: " + m->missing_tensors()[0]);
  std::printf("ok   bloom: %d tensors load under names without \"transformer.\"\n", loaded);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"q_proj", "fused in \"query_key_value\""}, {"gate_proj", "query_key_value, dense, dense_h_to_4h, dense_4h_to_h"}};
  for (const auto& [target, msg] : bad) {
    sft::LoraOptions lo;
    lo.targets = {target};
    try {
      m->add_lora(lo);
      fail("bloom: LoRA target " + target + " accepted");
    } catch (const std::exception& e) {
      if (std::string(e.what()).find(msg) == std::string::npos) fail(std::string("bloom: unhelpful LoRA error: ") + e.what());
    }
  }
  sft::LoraOptions lo;
  lo.targets = {"dense"};
  auto added = m->add_lora(lo);
  if (added.size() != 4 || added[0].name != "transformer.h.0.self_attention.dense.lora_A.weight")
    fail("bloom: LoRA on \"dense\" should adapt self_attention.dense only (PEFT's suffix match)");
  else std::printf("ok   bloom: LoRA target names (PEFT module paths, helpful errors)\n");
}

}  // namespace

void check_bloom() {
  check_bloom_ops();
  check_bloom_model(true);
  check_bloom_model(false);
  check_bloom_lora_merge();
  check_bloom_kv_cache();
  check_bloom_names();
}
