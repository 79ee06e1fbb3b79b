// Whole models through the CUDA backend's own code — dispatch, memory plan, kernels (the tiled GEMM
// standing in for cuBLASLt under the emulator) — against the CPU backend (the oracle) and the
// transformers/peft fixtures, for every architecture variant at fixture size:
//   llama (GQA), qwen2 (q/k/v bias, tied head), baichuan (W_pack), baichuan2 (NormHead), bloom (ALiBi).
//
//  1. peft's adapter on the fixture batch: logits, loss and every LoRA gradient equal peft's.
//  2. three LoRA training steps (LoRA dropout 0.1: masks regenerated on both sides, global-norm
//     clipping, AdamW): loss and every gradient at every step, the norm, and the trained adapter
//     against the CPU's — fp32 within 1e-5 (norm-wise), bf16 at PyTorch's bf16 level (kBf16*
//     below); and no allocation after the first step (the plan holds).
//  3. greedy KV-cache generation of 32 tokens: the same tokens as the CPU's (fp32).
//  4. full fine-tuning (every base weight's gradient: embedding, norms, biases, NormHead's
//     normalisation), prompt tuning (the virtual tokens' gradient) and gradient checkpointing, fp32.
//  5. QLoRA (NF4 base, double quantization): the quantized base bit for bit, the dry run's plan,
//     logits, and three training steps (8-bit AdamW on llama) against the CPU's QLoRA.
//  6. paged AdamW (32- and 8-bit states in pinned host memory) = the unpaged run, bit for bit.
// Prints one line per comparison (check.h). NOT A GPU RESULT under the emulator: scripts/gpu-check.sh
// runs the same checks on a real GPU.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../native/check.h"
#include "backend/registry.h"
#include "fixture.h"
#include "cuda/backend.h"
#include "model/modules.h"

#ifndef SFT_SOURCE_DIR
#define SFT_SOURCE_DIR "."
#endif

namespace {

using sft::Compute;
using sft::Device;
using sft::ModelBase;

struct Case {
  std::string arch;
  sft::ModelConfig cfg;
  fixture::Json expected, adapter_cfg;
  std::unique_ptr<fixture::Safetensors> weights, adapter, reference;
  std::vector<int32_t> ids, targets;
  int64_t B = 0, T = 0, tokens = 0;
};

Case load_case(const std::string& arch) {
  const std::string dir = std::string(SFT_SOURCE_DIR) + "/test/fixtures/reference/" + arch;
  Case c;
  c.arch = arch;
  c.cfg = fixture::model_config(fixture::read_json(dir + "/config.json"));
  c.expected = fixture::read_json(dir + "/expected.json");
  c.adapter_cfg = fixture::read_json(dir + "/peft-adapter/adapter_config.json");
  c.weights = std::make_unique<fixture::Safetensors>(dir + "/model.safetensors");
  c.adapter = std::make_unique<fixture::Safetensors>(dir + "/peft-adapter/adapter_model.safetensors");
  c.reference = std::make_unique<fixture::Safetensors>(dir + "/expected.safetensors");
  const auto& ids = c.expected["ids"];
  const auto& labels = c.expected["labels"];
  c.B = int64_t(ids.arr.size());
  c.T = int64_t(ids[0].arr.size());
  // Targets as the recipe shifts them: position t predicts labels[t + 1]; -100 at each row's end.
  for (int64_t b = 0; b < c.B; b++)
    for (int64_t t = 0; t < c.T; t++) {
      c.ids.push_back(int32_t(ids[size_t(b)][size_t(t)].num));
      const int32_t y = t + 1 < c.T ? int32_t(labels[size_t(b)][size_t(t + 1)].num) : -100;
      c.targets.push_back(y);
      c.tokens += y >= 0;
    }
  return c;
}

std::vector<std::string> lora_targets(const Case& c) {
  std::vector<std::string> t;
  for (const auto& x : c.adapter_cfg["target_modules"].arr) t.push_back(x.str);
  return t;
}

// Values as bf16 stores them (round to nearest even).
double round_bf16(double x) {
  float f = float(x);
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  std::memcpy(&f, &u, 4);
  return f;
}

// A model's tensors by name: the fixture's files, or random values of the same shapes.
struct Weights {
  std::vector<std::pair<std::string, std::vector<double>>> base, adapter;
};

Weights fixture_weights(const Case& c) {
  Weights w;
  for (const auto& t : c.weights->tensors()) {
    const std::string name = sft::model::canonical_tensor_name(c.cfg.arch, t.name);
    if (!sft::model::ignorable_tensor(c.cfg.arch, c.cfg.tie_embeddings, name)) w.base.emplace_back(name, t.values());
  }
  const std::string prefix = "base_model.model.";
  for (const auto& t : c.adapter->tensors()) w.adapter.emplace_back(t.name.substr(prefix.size()), t.values());
  return w;
}

// The fixture's shapes with values of a trained model's scale: weights N(0, 1/fan_in), norms near
// 1, embeddings N(0, 1), adapters of the size training gives them. The fixtures' own weights are
// HF's init (N(0, 0.02)): attention is nearly uniform there, and q/k gradients are differences of
// nearly equal numbers, which bf16 cannot resolve (5-10 % norm-wise, in PyTorch as here).
Weights scaled_weights(const Case& c, uint64_t seed) {
  Weights w = fixture_weights(c);
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  for (auto* set : {&w.base, &w.adapter})
    for (auto& [name, v] : *set) {
      const bool vec = name.find("norm") != std::string::npos || name.find("bias") != std::string::npos;
      const bool emb = name.find("embed") != std::string::npos || name.find("word_embeddings.weight") != std::string::npos ||
                       name == "lm_head.weight";
      int64_t fan_in = 1;
      for (const auto& t : c.weights->tensors())
        if (sft::model::canonical_tensor_name(c.cfg.arch, t.name) == name && t.shape.size() == 2) fan_in = t.shape[1];
      if (set == &w.adapter) fan_in = name.find("lora_A") != std::string::npos ? c.cfg.hidden : int64_t(c.adapter_cfg["r"].num) * 4;
      const bool weight_of_norm = vec && name.find("norm") != std::string::npos && name.find("bias") == std::string::npos;
      for (auto& x : v) {
        const double z = nd(rng);
        x = weight_of_norm ? 1.0 + 0.1 * z : vec ? 0.1 * z : emb ? z : z / std::sqrt(double(fan_in));
      }
    }
  return w;
}

// A model on a device holding `w` (dropout as given); `rounded`: every value rounded to bf16
// first, so that a CPU oracle of a bf16 run computes on the model the bf16 run holds.
std::unique_ptr<ModelBase> build(const Case& c, const Weights& w, Device d, Compute k, double dropout, bool adapter = true,
                                 bool rounded = false) {
  auto m = sft::make_model(c.cfg, sft::ModelOptions{d, k, false});
  auto set = [&](const std::string& name, std::vector<double> v) {
    if (rounded)
      for (auto& x : v) x = round_bf16(x);
    m->set_tensor(name, v.data(), int64_t(v.size()));
  };
  for (const auto& [name, v] : w.base) set(name, v);
  if (!adapter) return m;
  sft::LoraOptions o;
  o.targets = lora_targets(c);
  o.rank = int64_t(c.adapter_cfg["r"].num);
  o.alpha = c.adapter_cfg["lora_alpha"].num;
  o.dropout = dropout;
  o.seed = 7;
  m->add_lora(o);
  for (const auto& [name, v] : w.adapter) set(name, v);
  return m;
}

const char* kname(Compute k) { return k == Compute::F32 ? "fp32" : "bf16"; }

// The fixtures' measure (test/model/reference.test.ts): max |got - want| / max |want|.
double max_rel(const Vec& got, const Vec& want) {
  double d = 0, s = 0;
  for (size_t i = 0; i < want.size(); i++) d = std::max(d, std::fabs(got[i] - want[i])), s = std::max(s, std::fabs(want[i]));
  return got.size() == want.size() && s > 0 ? d / s : INFINITY;
}

Vec as_vec(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }

// bf16's tolerances. The issue asked 2e-2 on every gradient; at fixture size no bf16 run gets
// there: PyTorch's own bf16 on these fixtures (scripts/reference/bf16_noise.py) differs from fp32 on
// the same bf16-rounded values by 2.5-4.5 % norm-wise for the median LoRA gradient and 7-10 % for the
// worst (q/k of the last layer: attention's backward subtracts nearly equal numbers). So: the loss
// within 2e-2, the median gradient within 5e-2 and the worst within 1.5e-1 — PyTorch's level — and
// fp32, where the logic shows, within 1e-5.
constexpr double kBf16Loss = 2e-2, kBf16Median = 5e-2, kBf16Worst = 1.5e-1;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// 1. peft's adapter on the fixture batch, through the CUDA backend.
void check_fixture(const Case& c, Compute k) {
  const std::string n = "cuda " + c.arch + " " + kname(k) + " vs peft: ";
  const double tol = k == Compute::F32 ? 1e-5 : kBf16Loss;
  auto m = build(c, fixture_weights(c), Device::Cuda, k, 0.0);
  const Vec logits = as_vec(m->logits(c.ids.data(), c.B, c.T)), want_logits = c.reference->at("logits.peft").values();
  if (k == Compute::F32) report(n + "logits", max_rel(logits, want_logits), tol);
  else report(n + "logits (norm-wise)", rel_err(logits, want_logits), kBf16Median);
  int64_t count = 0;
  m->zero_grad();
  const double loss = m->forward_backward(c.ids.data(), c.targets.data(), c.B, c.T, 1.0 / double(c.tokens), 0, &count);
  const double want = c.expected["loss_peft"].num;
  report(n + "loss", std::fabs(loss / double(count) - want) / std::fabs(want), tol);
  if (k != Compute::F32) return;  // gradients in bf16: against the CPU on well-scaled weights (check_training)
  double worst = 0;
  int grads = 0;
  for (const auto& p : m->trainable_params()) {
    worst = std::max(worst, max_rel(m->get_grad(p.name), c.reference->at("grad." + p.name).values()));
    grads++;
  }
  report(n + std::to_string(grads) + " LoRA gradients (worst)", worst, 1e-4);
}

// 2. Three training steps, CPU and CUDA side by side.
void check_training(const Case& c, Compute k) {
  const std::string n = "cuda " + c.arch + " " + kname(k) + " vs cpu: ";
  const bool f32 = k == Compute::F32;
  const Weights w = scaled_weights(c, 42);
  auto cpu = build(c, w, Device::Cpu, Compute::F32, 0.1, true, !f32);
  auto gpu = build(c, w, Device::Cuda, k, 0.1);
  sft::PlanRequest plan;
  plan.batch = c.B, plan.seq = c.T, plan.train = true, plan.optimizer = true;
  cpu->plan(plan);
  gpu->plan(plan);
  sft::AdamWOptions o;
  o.lr = 1e-3, o.weight_decay = 0.01, o.max_grad_norm = 1e-3;  // clipping active at every step
  sft::MemoryStats after_first{};
  double worst_loss = 0, worst_grad = 0, worst_norm = 0;
  std::vector<double> errs;
  for (int64_t step = 0; step < 3; step++) {
    int64_t n1 = 0, n2 = 0;
    cpu->zero_grad();
    gpu->zero_grad();
    const double l1 = cpu->forward_backward(c.ids.data(), c.targets.data(), c.B, c.T, 1.0 / double(c.tokens), step, &n1);
    const double l2 = gpu->forward_backward(c.ids.data(), c.targets.data(), c.B, c.T, 1.0 / double(c.tokens), step, &n2);
    worst_loss = std::max(worst_loss, std::fabs(l1 - l2) / std::fabs(l1));
    for (const auto& p : cpu->trainable_params()) {
      const double e = rel_err(gpu->get_grad(p.name), cpu->get_grad(p.name));
      errs.push_back(e);
      worst_grad = std::max(worst_grad, e);
    }
    const double g1 = cpu->adamw_step(o), g2 = gpu->adamw_step(o);
    worst_norm = std::max(worst_norm, std::fabs(g1 - g2) / g1);
    if (step == 0) after_first = gpu->memory_stats();
  }
  report(n + "loss, 3 steps (worst)", worst_loss, f32 ? 1e-5 : kBf16Loss);
  if (!f32) report(n + "LoRA gradients, 3 steps (median)", median(errs), kBf16Median);
  report(n + "every LoRA gradient, 3 steps (worst)", worst_grad, f32 ? 1e-5 : kBf16Worst);
  report(n + "gradient norm before clipping, 3 steps", worst_norm, f32 ? 1e-5 : kBf16Median);
  double worst_w = 0;
  for (const auto& p : cpu->trainable_params()) worst_w = std::max(worst_w, rel_err(gpu->get_tensor(p.name), cpu->get_tensor(p.name)));
  report(n + "trained adapter after 3 AdamW steps", worst_w, f32 ? 1e-5 : kBf16Loss);
  // The check after each step (trainable_finite): true now; one NaN in a trained tensor (its fp32
  // master where compute is bf16) makes it false on both backends.
  const bool finite_before = cpu->trainable_finite() && gpu->trainable_finite();
  const std::string probe = cpu->trainable_params().back().name;
  for (ModelBase* m : {cpu.get(), gpu.get()}) {
    std::vector<double> v = m->get_tensor(probe);
    v[v.size() / 2] = std::nan("");
    m->set_tensor(probe, v.data(), int64_t(v.size()));
  }
  report(n + "trainable_finite: true after the steps, false with one NaN", finite_before && !cpu->trainable_finite() && !gpu->trainable_finite() ? 0.0 : 1.0, 0.5);
  const sft::MemoryStats end = gpu->memory_stats();
  report(n + "no allocation after the first step (plan holds)", end.allocations == after_first.allocations ? 0.0 : 1.0, 0.5);
}

// 3. Greedy decoding with the KV cache.
void check_generation(const Case& c) {
  const std::string n = "cuda " + c.arch + " fp32 vs cpu: ";
  const Weights w = scaled_weights(c, 43);
  auto cpu = build(c, w, Device::Cpu, Compute::F32, 0.0);
  auto gpu = build(c, w, Device::Cuda, Compute::F32, 0.0);
  std::vector<int32_t> prompt(c.ids.begin(), c.ids.begin() + c.T);
  std::vector<int32_t> t1, t2;
  for (auto* tokens : {&t1, &t2}) {
    ModelBase& m = tokens == &t1 ? *cpu : *gpu;
    m.reset_cache();
    std::vector<float> lg = m.feed(prompt.data(), int64_t(prompt.size()));
    for (int i = 0; i < 32; i++) {
      const int32_t next = int32_t(std::max_element(lg.begin(), lg.end()) - lg.begin());
      tokens->push_back(next);
      lg = m.feed(&next, 1);
    }
  }
  int same = 0;
  while (same < 32 && t1[size_t(same)] == t2[size_t(same)]) same++;
  report(n + "greedy KV-cache generation, 32 tokens equal (" + std::to_string(same) + " agree)", same == 32 ? 0.0 : 1.0, 0.5);
  // The prompt's last logits through the cache, against the CPU's.
  cpu->reset_cache(), gpu->reset_cache();
  const auto a = cpu->feed(prompt.data(), int64_t(prompt.size())), b = gpu->feed(prompt.data(), int64_t(prompt.size()));
  report(n + "KV-cache prefill logits", rel_err(as_vec(b), as_vec(a)), 1e-5);
}

// 4. Every base weight trainable; then prompt tuning.
void check_full_and_prompt(const Case& c) {
  const std::string n = "cuda " + c.arch + " fp32 vs cpu: ";
  {
    const Weights w = scaled_weights(c, 44);
    auto cpu = build(c, w, Device::Cpu, Compute::F32, 0.0, false), gpu = build(c, w, Device::Cuda, Compute::F32, 0.0, false);
    cpu->set_base_trainable(true), gpu->set_base_trainable(true);
    int64_t n1 = 0, n2 = 0;
    const double l1 = cpu->forward_backward(c.ids.data(), c.targets.data(), c.B, c.T, 1.0 / double(c.tokens), 0, &n1);
    const double l2 = gpu->forward_backward(c.ids.data(), c.targets.data(), c.B, c.T, 1.0 / double(c.tokens), 0, &n2);
    double worst = std::fabs(l1 - l2) / std::fabs(l1);
    std::string where = "loss";
    for (const auto& p : cpu->trainable_params()) {
      const double e = rel_err(gpu->get_grad(p.name), cpu->get_grad(p.name));
      if (e > worst) worst = e, where = p.name;
    }
    report(n + "full fine-tuning, every gradient (worst: " + where.substr(where.rfind('.', where.size() - 8) + 1) + ")", worst, 1e-5);
  }
  {
    const Weights w = scaled_weights(c, 45);
    auto cpu = build(c, w, Device::Cpu, Compute::F32, 0.0, false), gpu = build(c, w, Device::Cuda, Compute::F32, 0.0, false);
    cpu->add_prompt_tuning(3, nullptr, 11), gpu->add_prompt_tuning(3, nullptr, 11);
    int64_t n1 = 0, n2 = 0;
    const double l1 = cpu->forward_backward(c.ids.data(), c.targets.data(), c.B, c.T, 1.0 / double(c.tokens), 0, &n1);
    const double l2 = gpu->forward_backward(c.ids.data(), c.targets.data(), c.B, c.T, 1.0 / double(c.tokens), 0, &n2);
    report(n + "prompt tuning loss", std::fabs(l1 - l2) / std::fabs(l1), 1e-5);
    report(n + "prompt tuning: virtual tokens' gradient", rel_err(gpu->get_grad("prompt_embeddings"), cpu->get_grad("prompt_embeddings")), 1e-5);
  }
}

// Gradient checkpointing on the GPU (layers recomputed in backward, dropout masks regenerated)
// gives the CPU's gradients without it.
void check_checkpointing(const Case& c) {
  const Weights w = scaled_weights(c, 46);
  auto cpu = build(c, w, Device::Cpu, Compute::F32, 0.1), gpu = build(c, w, Device::Cuda, Compute::F32, 0.1);
  gpu->set_gradient_checkpointing(true);
  int64_t n1 = 0, n2 = 0;
  const double l1 = cpu->forward_backward(c.ids.data(), c.targets.data(), c.B, c.T, 1.0 / double(c.tokens), 3, &n1);
  const double l2 = gpu->forward_backward(c.ids.data(), c.targets.data(), c.B, c.T, 1.0 / double(c.tokens), 3, &n2);
  double worst = std::fabs(l1 - l2) / std::fabs(l1);
  for (const auto& p : cpu->trainable_params()) worst = std::max(worst, rel_err(gpu->get_grad(p.name), cpu->get_grad(p.name)));
  report("cuda " + c.arch + " fp32 with gradient checkpointing vs cpu without: loss and LoRA gradients", worst, 1e-5);
}

// lm_head + cross-entropy in chunks of 3 rows (model/decoder.h, head_loss: the chunk's logits, the
// loss kernel in place, dlnf and lm_head's gradient from the chunk) against the same model in one
// chunk, on the GPU, with every base weight trainable (lm_head, tied embeddings, NormHead) and the
// batch's first row ignored: loss, every gradient, the eval loss and logits() within 1e-6 (fp32);
// and against the CPU's one chunk within the fp32 tolerance of the other checks.
void check_head_chunks(const Case& c) {
  const std::string n = "cuda " + c.arch + " fp32: lm_head in chunks of 3 rows ";
  const Weights w = scaled_weights(c, 47);
  std::vector<int32_t> targets = c.targets;
  std::fill(targets.begin(), targets.begin() + std::min<int64_t>(c.T, 4), -100);  // a chunk with nothing to learn: skipped
  auto cpu = build(c, w, Device::Cpu, Compute::F32, 0.0, false);
  auto one = build(c, w, Device::Cuda, Compute::F32, 0.0, false), chunked = build(c, w, Device::Cuda, Compute::F32, 0.0, false);
  one->set_head_chunk_rows(c.B * c.T);
  cpu->set_head_chunk_rows(c.B * c.T);
  chunked->set_head_chunk_rows(3);
  double loss[3], eval[3];
  std::vector<Vec> grads[3], logits(3);
  ModelBase* ms[3] = {cpu.get(), one.get(), chunked.get()};
  for (int i = 0; i < 3; i++) {
    ms[i]->set_base_trainable(true);
    ms[i]->zero_grad();
    loss[i] = ms[i]->forward_backward(c.ids.data(), targets.data(), c.B, c.T, 1.0 / double(c.tokens), 0, nullptr);
    for (const auto& p : ms[i]->trainable_params()) grads[i].push_back(ms[i]->get_grad(p.name));
    eval[i] = ms[i]->forward_loss(c.ids.data(), targets.data(), c.B, c.T, 0, false, nullptr);
    logits[size_t(i)] = as_vec(ms[i]->logits(c.ids.data(), c.B, c.T));
  }
  auto worst = [&](int a, int b) {
    double e = std::max(std::fabs(loss[a] - loss[b]) / std::fabs(loss[b]), std::fabs(eval[a] - eval[b]) / std::fabs(eval[b]));
    for (size_t i = 0; i < grads[b].size(); i++) e = std::max(e, rel_err(grads[a][i], grads[b][i]));
    return std::max(e, rel_err(logits[size_t(a)], logits[size_t(b)]));
  };
  report(n + "equal one chunk (loss, " + std::to_string(grads[1].size()) + " gradients, eval loss, logits)", worst(2, 1), 1e-6);
  report(n + "vs cpu in one chunk", worst(2, 0), 1e-5);
}

// Random weights made on each backend (the benchmark's): the same model for one seed.
void check_randomize(const Case& c) {
  auto cpu = sft::make_model(c.cfg, sft::ModelOptions{Device::Cpu, Compute::F32, false});
  auto gpu = sft::make_model(c.cfg, sft::ModelOptions{Device::Cuda, Compute::F32, false});
  cpu->randomize(5), gpu->randomize(5);
  report("cuda " + c.arch + " fp32 vs cpu: weights made by randomize() give the same logits",
         rel_err(as_vec(gpu->logits(c.ids.data(), c.B, c.T)), as_vec(cpu->logits(c.ids.data(), c.B, c.T))), 1e-5);
}

// A plan beyond the device's memory: the engine's OutOfMemory names the kind that did not fit.
// Only under the emulator, whose device has a known size (4 GiB, SFT_EMU_DEVICE_MEMORY).
void check_out_of_memory(const Case& c) {
#ifdef SFT_CUDA_EMULATE
  auto gpu = build(c, fixture_weights(c), Device::Cuda, Compute::F32, 0.0);
  sft::PlanRequest plan;
  plan.batch = 400000, plan.seq = c.T, plan.train = true;  // ~ 11 GiB of activations
  std::string msg;
  sft::MemKind kind = sft::MemKind::Weights;
  try {
    gpu->plan(plan);
  } catch (const sft::OutOfMemory& e) {
    msg = e.what(), kind = e.kind;
  }
  const bool ok = kind == sft::MemKind::Activations && msg.find("GPU out of memory") != std::string::npos &&
                  msg.find("activations") != std::string::npos;
  report("cuda " + c.arch + ": a plan beyond device memory fails naming its kind (" + (msg.empty() ? "no error" : msg.substr(0, 60)) + "...)",
         ok ? 0.0 : 1.0, 0.5);
  // The model is still usable within memory: a normal plan and step go on.
  plan.batch = c.B;
  gpu->plan(plan);
  int64_t n = 0;
  const double loss = gpu->forward_backward(c.ids.data(), c.targets.data(), c.B, c.T, 1.0, 0, &n);
  report("cuda " + c.arch + ": the model trains after the failed plan", std::isfinite(loss) && n == c.tokens ? 0.0 : 1.0, 0.5);
#else
  (void)c;
#endif
}

// 5. QLoRA: the base's linear weights quantized to NF4 (double quantization) on each backend, LoRA
// on top; the GPU with gradient checkpointing (QLoRA's usual setting), the CPU without. The
// quantized base equals the CPU's bit for bit (every NF4 weight dequantized, every other tensor),
// the meta model's plan (the dry run) is the plan the run allocates, and three training steps
// (dropout 0.1, clipping, AdamW; 8-bit AdamW on llama) match the CPU's.
// on_load: quantize_nf4 first and each base tensor quantizes as it is set (QLoRA's load); else
// set every tensor in full precision, then quantize (the reference order).
// What a load took on the device (the emulator's count): `transient`, its peak over what the loaded
// model keeps (the whole-T linears, in the reference order; one tensor's staging, quantizing as it
// loads), against `linears_t`, the quantized linears' bytes in T.
struct LoadMemory {
  size_t transient = 0, linears_t = 0;
};
std::unique_ptr<ModelBase> build_qlora(const Case& c, const Weights& w, Device d, Compute k, bool rounded, bool meta = false,
                                       bool on_load = false, LoadMemory* mem = nullptr) {
#ifdef SFT_CUDA_EMULATE
  sft_emu::reset_device_peak();
#endif
  auto m = sft::make_model(c.cfg, sft::ModelOptions{d, k, meta});
  int64_t linears_t = 0;
  if (on_load) linears_t = m->quantize_nf4(true).first;
  if (!meta)
    for (const auto& [name, v0] : w.base) {
      std::vector<double> v = v0;
      if (rounded)
        for (auto& x : v) x = round_bf16(x);
      m->set_tensor(name, v.data(), int64_t(v.size()));
    }
  if (!on_load) linears_t = m->quantize_nf4(true).first;
  if (mem) mem->linears_t = size_t(linears_t);
#ifdef SFT_CUDA_EMULATE
  if (mem) mem->transient = sft_emu::device_peak_bytes() - sft_emu::live_device_bytes();
#endif
  sft::LoraOptions o;
  o.targets = lora_targets(c);
  o.rank = int64_t(c.adapter_cfg["r"].num);
  o.alpha = c.adapter_cfg["lora_alpha"].num;
  o.dropout = 0.1;
  o.seed = 7;
  m->add_lora(o);
  if (!meta)
    for (const auto& [name, v0] : w.adapter) {
      std::vector<double> v = v0;
      if (rounded)
        for (auto& x : v) x = round_bf16(x);
      m->set_tensor(name, v.data(), int64_t(v.size()));
    }
  return m;
}

void check_qlora(const Case& c, Compute k) {
  const std::string n = "cuda " + c.arch + " " + kname(k) + " QLoRA vs cpu QLoRA: ";
  const bool f32 = k == Compute::F32, eight_bit = c.arch == "llama";
  const Weights w = scaled_weights(c, 47);
  auto cpu = build_qlora(c, w, Device::Cpu, Compute::F32, !f32);
  // The GPU loads as QLoRA does (quantized as each tensor arrives): over what the loaded model keeps
  // it takes less than the linears in T, which the reference order (measured the same way) holds
  // whole, NF4 copies on top. (The whole peak against the whole base in T says little on these
  // tiny models: per-tensor alignment and the dequantization workspace are most of it.)
  LoadMemory load, ref;
  auto gpu = build_qlora(c, w, Device::Cuda, k, false, false, true, &load);
#ifdef SFT_CUDA_EMULATE
  build_qlora(c, w, Device::Cuda, k, false, false, false, &ref);
  report(n + "the load's device peak over what it keeps (" + std::to_string(load.transient >> 10) + " KiB) is under the linears in T (" +
             std::to_string(load.linears_t >> 10) + " KiB; loaded first, then quantized: " + std::to_string(ref.transient >> 10) + " KiB)",
         load.transient < load.linears_t && ref.transient >= ref.linears_t ? 0.0 : 1.0, 0.5);
#endif
  gpu->set_gradient_checkpointing(true);
  bool base_same = true;
  for (const auto& p : cpu->base_params()) base_same = base_same && gpu->get_tensor(p.name) == cpu->get_tensor(p.name);
  report(n + "the quantized base (NF4 weights dequantized, the rest as stored) = CPU's, bit for bit", base_same ? 0.0 : 1.0, 0.5);
  sft::PlanRequest plan;
  plan.batch = c.B, plan.seq = c.T, plan.train = true, plan.optimizer = true, plan.eight_bit = eight_bit, plan.min_8bit_size = 0;
  cpu->plan(plan);
  gpu->plan(plan);
  {
    auto meta = build_qlora(c, w, Device::Cuda, k, false, true);
    meta->set_gradient_checkpointing(true);
    meta->plan(plan);
    const sft::MemoryPlan a = meta->memory_plan(), b = gpu->memory_plan();
    bool same_plan = b[sft::MemKind::Workspace].bytes > 0;
    for (size_t i = 0; i < size_t(sft::MemKind::Count); i++) same_plan = same_plan && a.kinds[i].bytes == b.kinds[i].bytes;
    report(n + "the meta model's plan (dry run) = the run's, NF4 weights and their workspace included", same_plan ? 0.0 : 1.0, 0.5);
  }
  const Vec l1 = as_vec(cpu->logits(c.ids.data(), c.B, c.T)), l2 = as_vec(gpu->logits(c.ids.data(), c.B, c.T));
  report(n + "logits", rel_err(l2, l1), f32 ? 1e-5 : kBf16Median);
  sft::AdamWOptions o;
  o.lr = 1e-3, o.weight_decay = 0.01, o.max_grad_norm = 1e-3;
  o.eight_bit = eight_bit, o.min_8bit_size = 0;
  double worst_loss = 0, worst_grad = 0, first_grad = 0;
  std::string where;
  std::vector<double> errs;
  for (int64_t step = 0; step < 3; step++) {
    int64_t n1 = 0, n2 = 0;
    cpu->zero_grad(), gpu->zero_grad();
    const double a = cpu->forward_backward(c.ids.data(), c.targets.data(), c.B, c.T, 1.0 / double(c.tokens), step, &n1);
    const double b = gpu->forward_backward(c.ids.data(), c.targets.data(), c.B, c.T, 1.0 / double(c.tokens), step, &n2);
    worst_loss = std::max(worst_loss, std::fabs(a - b) / std::fabs(a));
    for (const auto& p : cpu->trainable_params()) {
      const double e = rel_err(gpu->get_grad(p.name), cpu->get_grad(p.name));
      errs.push_back(e);
      if (step == 0) first_grad = std::max(first_grad, e);
      if (e > worst_grad) worst_grad = e, where = p.name + " at step " + std::to_string(step);
    }
    cpu->adamw_step(o), gpu->adamw_step(o);
  }
  report(n + "loss, 3 steps (worst)", worst_loss, f32 ? 1e-5 : kBf16Loss);
  if (!f32) report(n + "LoRA gradients, 3 steps (median)", median(errs), kBf16Median);
  // fp32: at the first step both sides hold the same weights, and the gradients agree to rounding
  // (1e-5). After an AdamW step the adapters differ by a few 1e-6 (the update is about +-lr wherever
  // |g| is small, whatever its rounding), which the q/k/v gradients amplify several times: 3e-5 then.
  if (f32) report(n + "every LoRA gradient, first step (worst)", first_grad, 1e-5);
  report(n + "every LoRA gradient, 3 steps (worst: " + where.substr(where.find("layers.") + 7) + ")", worst_grad, f32 ? 3e-5 : kBf16Worst);
  double worst_w = 0;
  for (const auto& p : cpu->trainable_params()) worst_w = std::max(worst_w, rel_err(gpu->get_tensor(p.name), cpu->get_tensor(p.name)));
  report(n + "trained adapter after 3 " + (eight_bit ? "8-bit " : "") + "AdamW steps", worst_w, f32 ? 1e-5 : kBf16Loss);
}

// 6. Paged AdamW through the model (optim paged_adamw_32bit / _8bit): the states in pinned host
// memory, paged through the backend's pager, give the unpaged run's adapters and moments bit for
// bit over three steps; the plan's optimizer kind is the pager's device buffers only.
void check_paged_training(const Case& c) {
  for (bool eight_bit : {false, true}) {
    const std::string n = "cuda " + c.arch + " fp32 paged AdamW (" + (eight_bit ? "8-bit" : "32-bit") + ") vs unpaged: ";
    const Weights w = scaled_weights(c, 48);
    auto a = build(c, w, Device::Cuda, Compute::F32, 0.1), b = build(c, w, Device::Cuda, Compute::F32, 0.1);
    sft::PlanRequest plan;
    plan.batch = c.B, plan.seq = c.T, plan.train = true, plan.optimizer = true, plan.eight_bit = eight_bit, plan.min_8bit_size = 0;
    a->plan(plan);
    plan.paged = true;
    b->plan(plan);
    const sft::KindPlan& opt = b->memory_plan()[sft::MemKind::Optimizer];
    report(n + "the plan's optimizer kind is the device pages only",
           opt.bytes == sft::CudaBackend<float>::paged_optimizer_bytes(eight_bit) && a->memory_plan()[sft::MemKind::Optimizer].bytes > 0 ? 0.0 : 1.0, 0.5);
    sft::AdamWOptions o;
    o.lr = 1e-3, o.weight_decay = 0.01, o.max_grad_norm = 1e-3, o.eight_bit = eight_bit, o.min_8bit_size = 0;
    for (int64_t step = 0; step < 3; step++) {
      int64_t n1 = 0, n2 = 0;
      a->zero_grad(), b->zero_grad();
      a->forward_backward(c.ids.data(), c.targets.data(), c.B, c.T, 1.0 / double(c.tokens), step, &n1);
      b->forward_backward(c.ids.data(), c.targets.data(), c.B, c.T, 1.0 / double(c.tokens), step, &n2);
      a->adamw_step(o);
      sft::AdamWOptions op = o;
      op.paged = true;
      b->adamw_step(op);
    }
    bool same = true;
    for (const auto& p : a->trainable_params()) {
      same = same && a->get_tensor(p.name) == b->get_tensor(p.name);
      const sft::Moments x = a->get_moments(p.name), y = b->get_moments(p.name);
      same = same && x.m == y.m && x.v == y.v && x.m8 == y.m8 && x.v8 == y.v8 && x.m_absmax == y.m_absmax && x.v_absmax == y.v_absmax;
      same = same && (eight_bit ? !y.m8.empty() : !y.m.empty());
    }
    report(n + "adapters and moments after 3 steps, bit for bit", same ? 0.0 : 1.0, 0.5);
  }
}

}  // namespace

// Runs every model check (or only those of one architecture); returns the failures it added.
int run_model_checks(const std::string& only_arch) {
  const int before = failures;
  for (const char* arch : {"llama", "qwen2", "baichuan", "baichuan2", "bloom"}) {
    if (!only_arch.empty() && only_arch != arch) continue;
    try {
      const Case c = load_case(arch);
      for (Compute k : {Compute::F32, Compute::BF16}) check_fixture(c, k), check_training(c, k);
      check_generation(c);
      check_full_and_prompt(c);
      check_randomize(c);
      check_checkpointing(c);
      check_head_chunks(c);
      for (Compute k : {Compute::F32, Compute::BF16}) check_qlora(c, k);
      if (c.arch == "llama") check_out_of_memory(c), check_paged_training(c);
    } catch (const std::exception& e) {
      std::printf("FAIL cuda %s: exception: %s\n", arch, e.what());
      failures++;
    }
  }
  return failures - before;
}
