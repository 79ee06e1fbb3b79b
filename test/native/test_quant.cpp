// NF4 + double quantization (QLoRA / bitsandbytes) checked against the published algorithm:
// the code table against the normal quantiles it is defined from, a hand-worked block (codes and
// nibble order), error statistics on Gaussian weights, the dynamic 8-bit map, the dequantizing
// GEMM against dequantize-then-multiply, and a quantized model against its dequantized twin.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "check.h"
#include "cpu/gemm.h"
#include "cpu/ops.h"
#include "cpu/quant.h"
#include "model/model.h"

using namespace sft::cpu;

namespace {

// Inverse standard normal CDF by bisection on erfc (slow, exact to ~1e-15: a reference only).
double norm_ppf(double p) {
  double lo = -40, hi = 40;
  for (int i = 0; i < 200; i++) {
    const double mid = 0.5 * (lo + hi);
    (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

void check_nf4_table() {
  // QLoRA's create_normal_map(offset = 0.9677083): 8 positive quantiles norm.ppf(linspace(offset,
  // 0.5, 9)[:-1]), 7 negative -norm.ppf(linspace(offset, 0.5, 8)[:-1]), zero; sorted, divided by max.
  const double offset = 0.9677083;
  std::vector<double> v;
  for (int i = 0; i < 8; i++) v.push_back(norm_ppf(offset + (0.5 - offset) * i / 8.0));
  for (int i = 0; i < 7; i++) v.push_back(-norm_ppf(offset + (0.5 - offset) * i / 7.0));
  v.push_back(0);
  std::sort(v.begin(), v.end());
  const double mx = v.back();
  Vec want, got;
  for (int i = 0; i < 16; i++) want.push_back(v[i] / mx), got.push_back(kNF4[i]);
  report("nf4: code table equals the normalised normal quantiles", rel_err(got, want), 1e-6);
}

void check_hand_block() {
  // absmax 2; normalised 0.25 -> code 10 (0.2461), -0.5 -> 2 (-0.5251), 0.15 -> 9 (0.1609),
  // 0 -> 7, 1 -> 15, -1 -> 0; the rest are 0 -> 7. Element 2j is the HIGH nibble.
  float x[64] = {0.5f, -1.0f, 0.3f, 0.0f, 2.0f, -2.0f};
  uint8_t packed[32];
  float absmax[1];
  nf4_quantize(packed, absmax, x, 64);
  const uint8_t want[4] = {0xA2, 0x97, 0xF0, 0x77};
  bool ok = absmax[0] == 2.0f;
  for (int i = 0; i < 4; i++) ok = ok && packed[i] == want[i];
  for (int i = 4; i < 32; i++) ok = ok && packed[i] == 0x77;
  float back[64];
  nf4_dequantize(back, packed, absmax, 64);
  ok = ok && back[0] == 2.0f * kNF4[10] && back[1] == 2.0f * kNF4[2] && back[4] == 2.0f && back[5] == -2.0f;
  if (!ok) failures++;
  std::printf("%s nf4: hand-worked block (codes A2 97 F0 77.., absmax 2, decode)\n", ok ? "ok  " : "FAIL");
}

void check_gaussian_error() {
  // NF4 is information-theoretically tuned for normal weights: on N(0,1) data in blocks of 64 it
  // must beat a uniform symmetric 4-bit absmax quantizer (15 levels) and use every code.
  std::mt19937_64 rng(7);
  std::normal_distribution<float> d(0.f, 1.f);
  const int64_t n = 1 << 16;
  std::vector<float> x(n), back(n), absmax(n / 64);
  for (auto& v : x) v = d(rng);
  std::vector<uint8_t> packed(n / 2);
  nf4_quantize(packed.data(), absmax.data(), x.data(), n);
  nf4_dequantize(back.data(), packed.data(), absmax.data(), n);
  double se_nf4 = 0, se_int4 = 0;
  std::vector<int> usage(16, 0);
  for (int64_t i = 0; i < n; i++) {
    se_nf4 += double(x[i] - back[i]) * double(x[i] - back[i]);
    const float a = absmax[i / 64];
    const float u = std::round(x[i] / a * 7.0f) / 7.0f * a;
    se_int4 += double(x[i] - u) * double(x[i] - u);
    usage[(i & 1) ? (packed[i / 2] & 15) : (packed[i / 2] >> 4)]++;
  }
  const double rmse_nf4 = std::sqrt(se_nf4 / n), rmse_int4 = std::sqrt(se_int4 / n);
  int rare = 0;
  for (int c : usage) rare += c < n / 100;  // a code used by < 1% of weights
  const bool ok = rmse_nf4 < rmse_int4 && rare == 0;
  if (!ok) failures++;
  std::printf("%s nf4: Gaussian RMSE %.4f < uniform int4 %.4f, every code used >= 1%%\n", ok ? "ok  " : "FAIL", rmse_nf4,
              rmse_int4);
}

void check_double_quant() {
  const auto& map = dynamic_map_signed();
  bool ok = map.size() == 256 && map.back() == 1.0f && std::is_sorted(map.begin(), map.end());
  ok = ok && std::count(map.begin(), map.end(), 0.0f) == 1;
  for (float v : map)
    if (v > 0 && v < 1) ok = ok && std::find(map.begin(), map.end(), -v) != map.end();
  // smallest non-zero magnitude: 10^-6 * mean(0.1, 1) = 5.5e-7 (exponent 0 has one fraction value)
  ok = ok && std::fabs(map[128] - 5.5e-7f) < 1e-12f;
  if (!ok) failures++;
  std::printf("%s q8 dynamic map: 256 sorted values, symmetric, one 0, ends at 1\n", ok ? "ok  " : "FAIL");

  std::mt19937_64 rng(3);
  std::normal_distribution<float> d(0.f, 0.02f);
  const int64_t n = 64 * 1000;
  std::vector<float> x(n);
  for (auto& v : x) v = d(rng);
  Nf4Tensor plain = nf4_quantize_tensor(x.data(), n, false);
  Nf4Tensor dq = nf4_quantize_tensor(x.data(), n, true);
  double mean = 0;
  for (float a : plain.absmax) mean += a;
  mean /= double(plain.absmax.size());
  Vec a(plain.absmax.begin(), plain.absmax.end()), b(dq.absmax.begin(), dq.absmax.end());
  const bool same_codes = plain.packed == dq.packed;
  const bool offset_ok = std::fabs(dq.offset - mean) < 1e-6 * mean;
  const double err = rel_err(b, a);
  if (!same_codes || !offset_ok) failures++;
  std::printf("%s double quant: offset = mean(absmax), same NF4 codes, %zu + %zu bytes of scales (was %zu)\n",
              same_codes && offset_ok ? "ok  " : "FAIL", dq.absmax_q.size(), dq.absmax2.size() * 4, plain.absmax.size() * 4);
  report("double quant: 8-bit absmax within 1% of fp32", err, 1e-2);
}

void check_gemm_q4_at(int64_t M);

void check_gemm_q4() {
  for (int64_t M : {37, 1, 3}) check_gemm_q4_at(M);  // the packed GEMM, and the decode GEMV (M <= 4)
}

void check_gemm_q4_at(int64_t M) {
  std::mt19937_64 rng(11);
  const int64_t N = 96 + 3, K = 160;  // rows of W split into two NF4 tensors (like q and k)
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> w(N * K), x(M * K), dy(M * N);
  for (auto& v : w) v = d(rng);
  for (auto& v : x) v = d(rng);
  for (auto& v : dy) v = d(rng);
  Nf4Weight W;
  W.rows = N, W.cols = K;
  W.segments.push_back({0, 64, nf4_quantize_tensor(w.data(), 64 * K, true)});
  W.segments.push_back({64, N - 64, nf4_quantize_tensor(w.data() + 64 * K, (N - 64) * K, true)});
  std::vector<float> wd(N * K);
  for (int64_t r = 0; r < N; r++) W.decode_row(wd.data() + r * K, r, 0, K);
  std::vector<float> y1(M * N), y2(M * N), dx1(M * K), dx2(M * K);
  gemm_q4<float>(false, M, N, K, 1.f, x.data(), K, W, 0.f, y1.data(), N);
  gemm<float>(false, false, M, N, K, 1.f, x.data(), K, wd.data(), K, 0.f, y2.data(), N);
  gemm_q4<float>(true, M, K, N, 1.f, dy.data(), N, W, 0.f, dx1.data(), K);
  gemm<float>(false, true, M, K, N, 1.f, dy.data(), N, wd.data(), K, 0.f, dx2.data(), K);
  const bool ok = y1 == y2 && dx1 == dx2;
  if (!ok) failures++;
  std::printf("%s gemm_q4 (M %lld): x W^T and dy W equal dequantize-then-gemm bit for bit\n", ok ? "ok  " : "FAIL", (long long)M);
}

void check_quantized_model() {
  sft::ModelConfig c;
  c.arch = sft::Arch::Qwen2;
  c.vocab = 50, c.hidden = 64, c.intermediate = 96, c.layers = 2, c.heads = 4, c.kv_heads = 2;
  c.qkv_bias = true, c.tie_embeddings = true;
  std::mt19937_64 rng(4);
  for (bool f64 : {false, true}) {
    auto q = sft::make_model(c, f64);
    auto ref = sft::make_model(c, f64);
    for (const auto& p : q->base_params()) {
      int64_t n = 1;
      for (auto s : p.shape) n *= s;
      Vec v = randn(n, rng, p.name.find("norm") != std::string::npos ? 0.0 : 0.2);
      if (p.name.find("norm") != std::string::npos)
        for (auto& e : v) e = 1.0;
      q->set_tensor(p.name, v.data(), n);
    }
    auto [before, after] = q->quantize_nf4(true);
    for (const auto& p : q->base_params()) {  // the twin holds the dequantized values in full precision
      Vec v = q->get_tensor(p.name);
      ref->set_tensor(p.name, v.data(), int64_t(v.size()));
    }
    std::vector<int32_t> ids = {3, 17, 42, 8, 0, 49};
    auto a = q->logits(ids.data(), 2, 3), b = ref->logits(ids.data(), 2, 3);
    report(std::string(f64 ? "f64" : "f32") + " model: NF4 logits equal the dequantized twin's (" +
               std::to_string(before / after) + "x smaller linears)",
           rel_err(Vec(a.begin(), a.end()), Vec(b.begin(), b.end())), f64 ? 1e-12 : 1e-6);
    if (!f64) continue;
    // LoRA gradients through the quantized base: finite differences in double.
    sft::LoraOptions lo;
    lo.targets = {"q_proj", "v_proj", "down_proj"};
    lo.rank = 2, lo.alpha = 4, lo.seed = 1;
    for (const auto& p : q->add_lora(lo)) {
      Vec v = randn(p.shape[0] * p.shape[1], rng, 0.2);
      q->set_tensor(p.name, v.data(), int64_t(v.size()));
    }
    std::vector<int32_t> labels = {17, 42, -100, 0, 49, 3};
    q->zero_grad();
    q->forward_backward(ids.data(), labels.data(), 2, 3, 1.0, 0, nullptr);
    double worst = 0;
    for (const auto& p : q->trainable_params()) {
      Vec w = q->get_tensor(p.name), g = q->get_grad(p.name);
      auto loss = [&] {
        q->set_tensor(p.name, w.data(), int64_t(w.size()));
        return q->forward_loss(ids.data(), labels.data(), 2, 3, 0, true, nullptr);
      };
      Vec num = numeric_grad(w, loss);
      q->set_tensor(p.name, w.data(), int64_t(w.size()));
      worst = std::max(worst, rel_err(g, num));
    }
    report("f64 model: LoRA grads through an NF4 base match finite differences", worst);
  }
}

// QLoRA's load: quantize_nf4 before the weights arrive, each checkpoint tensor quantizing as it
// loads (the base never whole in T), against the reference order: load every tensor in T, then
// quantize. fp32 checkpoint values on a bf16 model round to bf16 first in both. Every base tensor
// (NF4 ones dequantized) and the logits are equal bit for bit, and so is quantizing halfway through
// the load; the weights held while loading (the plan's Weights: the T block and the NF4 bytes, after
// every tensor) stay under the base in T, which the reference order holds whole; an NF4 tensor
// loaded twice or of the wrong shape, and randomizing an empty NF4 weight, are refused by name.
void check_quantize_on_load() {
  sft::ModelConfig c;
  c.arch = sft::Arch::Llama;
  c.vocab = 40, c.hidden = 64, c.intermediate = 160, c.layers = 2, c.heads = 4, c.kv_heads = 2;
  std::mt19937_64 rng(12);
  for (sft::Compute k : {sft::Compute::F32, sft::Compute::BF16}) {
    const sft::ModelOptions o{sft::Device::Cpu, k, false};
    auto after = sft::make_model(c, o), during = sft::make_model(c, o);
    during->quantize_nf4(true);
    std::vector<std::pair<std::string, std::vector<float>>> tensors;
    size_t base_t = 0, held_after = 0, held_during = 0;
    const auto held = [](const sft::ModelBase& m) { return m.memory_plan()[sft::MemKind::Weights].bytes; };
    for (const auto& p : after->base_params()) {
      int64_t n = 1;
      for (auto s : p.shape) n *= s;
      base_t += size_t(n) * (k == sft::Compute::F32 ? 4 : 2);
      std::vector<float> v(static_cast<size_t>(n));
      for (auto& e : v) e = float(std::normal_distribution<double>(0, 0.3)(rng));
      after->load_tensor(p.name, v.data(), sft::DType::F32, p.shape);
      during->load_tensor(p.name, v.data(), sft::DType::F32, p.shape);
      held_after = std::max(held_after, held(*after)), held_during = std::max(held_during, held(*during));
      tensors.push_back({p.name, v});
    }
    after->quantize_nf4(true);
    bool same = true;
    for (const auto& p : after->base_params()) same = same && after->get_tensor(p.name) == during->get_tensor(p.name);
    // Quantized halfway, between layer 0's q_proj and k_proj (one fused q/k/v matrix): the loaded
    // views quantize from T, the rest as they load (not from the T rows that never held them).
    auto halfway = sft::make_model(c, o);
    bool quantized = false;
    for (size_t i = 0; i < tensors.size(); i++) {
      if (!quantized && tensors[i].first.find("k_proj") != std::string::npos) quantized = true, halfway->quantize_nf4(true);
      halfway->load_tensor(tensors[i].first, tensors[i].second.data(), sft::DType::F32, after->base_params()[i].shape);
    }
    for (const auto& p : after->base_params()) same = same && after->get_tensor(p.name) == halfway->get_tensor(p.name);
    std::vector<int32_t> ids = {3, 17, 39, 8, 0, 21};
    same = same && after->logits(ids.data(), 2, 3) == during->logits(ids.data(), 2, 3);
    const std::string kn = k == sft::Compute::F32 ? "f32" : "bf16";
    if (!same) failures++;
    std::printf("%s %s model: NF4 quantized as each tensor loads (or halfway) = loaded in full, then quantized, bit for bit\n",
                same ? "ok  " : "FAIL", kn.c_str());
    const bool under = held_during < base_t && held_after >= base_t;
    if (!under) failures++;
    std::printf("%s %s model: weights held while loading %zu KiB, under the base in T %zu KiB (loaded first: %zu KiB)\n",
                under ? "ok  " : "FAIL", kn.c_str(), held_during >> 10, base_t >> 10, held_after >> 10);
    size_t qi = 0;  // a linear weight (NF4)
    while (tensors[qi].first.find("q_proj") == std::string::npos) qi++;
    const auto& [qname, qv] = tensors[qi];
    std::string again, shape;
    try {
      during->load_tensor(qname, qv.data(), sft::DType::F32, after->base_params()[qi].shape);
    } catch (const std::exception& e) {
      again = e.what();
    }
    try {
      during->load_tensor(qname, qv.data(), sft::DType::F32, {1, int64_t(qv.size())});
    } catch (const std::exception& e) {
      shape = e.what();
    }
    bool named = again.find(qname) != std::string::npos && again.find("NF4") != std::string::npos &&
                  shape.find(qname) != std::string::npos && shape.find("shape") != std::string::npos;
    // randomize has no T rows to fill for an NF4 weight quantized before it held values.
    auto empty = sft::make_model(c, o);
    empty->quantize_nf4(true);
    std::string rnd;
    try {
      empty->randomize(1);
    } catch (const std::exception& e) {
      rnd = e.what();
    }
    named = named && rnd.find("q_proj") != std::string::npos && rnd.find("randomize before quantize_nf4") != std::string::npos;
    if (!named) failures++;
    std::printf("%s %s model: loading %s again or in the wrong shape, or randomizing an empty NF4 weight, is refused by name (%s | %s | %s)\n",
                named ? "ok  " : "FAIL", kn.c_str(), qname.c_str(), again.c_str(), shape.c_str(), rnd.c_str());
  }
}

void check_adamw_8bit() {
  const auto& um = dynamic_map_unsigned();
  bool ok = um.size() == 256 && um.front() == 0.0f && um.back() == 1.0f && std::is_sorted(um.begin(), um.end());
  if (!ok) failures++;
  std::printf("%s q8 unsigned dynamic map: 256 sorted values from 0 to 1\n", ok ? "ok  " : "FAIL");
  // 8-bit states against 32-bit AdamW on the same gradients: the parameters stay close after 20 steps
  // (the states are rounded to 8 bits each step), and the first step's m is exact up to its code grid.
  std::mt19937_64 rng(9);
  std::normal_distribution<float> d(0.f, 1.f);
  const int64_t n = 1000;  // four blocks, the last one partial
  std::vector<float> p32(n), p8(n), g(n), m(n, 0), v(n, 0);
  for (auto& x : p32) x = d(rng);
  p8 = p32;
  std::vector<uint8_t> m8(n, map_index(dynamic_map_signed(), 0)), v8(n, map_index(um, 0));
  std::vector<float> ma(4, 0), va(4, 0);
  double worst_first = 0;
  for (int t = 1; t <= 20; t++) {
    for (auto& x : g) x = d(rng);
    adamw_update<float>(p32.data(), g.data(), m.data(), v.data(), n, 1e-3, 0.9, 0.999, 1e-8, 0.01, t, 1.0);
    adamw_update_8bit<float>(p8.data(), g.data(), m8.data(), ma.data(), v8.data(), va.data(), n, 1e-3, 0.9, 0.999, 1e-8, 0.01, t, 1.0);
    if (t == 1)
      for (int64_t i = 0; i < n; i++)
        worst_first = std::max(worst_first, double(std::fabs(dynamic_map_signed()[m8[i]] * ma[i / 256] - m[i]) / ma[i / 256]));
  }
  report("adamw 8-bit: first step's m within the code grid of 32-bit m (relative to block absmax)", worst_first, 0.05);
  report("adamw 8-bit: parameters after 20 steps close to 32-bit AdamW", rel_err(Vec(p8.begin(), p8.end()), Vec(p32.begin(), p32.end())), 1e-3);
}

}  // namespace

void check_quant() {
  check_adamw_8bit();
  check_nf4_table();
  check_hand_block();
  check_gaussian_error();
  check_double_quant();
  check_gemm_q4();
  check_quantized_model();
  check_quantize_on_load();
}
