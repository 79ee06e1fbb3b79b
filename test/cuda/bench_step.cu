// One whole LoRA training step of a Llama-2-7B-shaped model through the CUDA backend, timed:
//
//   sft_cuda_tests --step [--seq 512,2048] [--steps 5] [--ckpt] [--batch B] [--json FILE] [--tiny] [--qlora]
//
// The model: hidden 4096, intermediate 11008, 32 layers of 32 heads, vocab 32000, random bf16
// weights made on the device (randomize()), LoRA rank 64 (alpha 16, dropout 0.05) on every linear
// layer. Per sequence length the micro-batch is the largest power of two whose memory plan fits in
// 85 % of the free device memory (computed on a meta model: nothing allocated to find it). One
// warm-up step, then --steps timed steps (forward + backward + clip + AdamW; the step returns only
// after the loss and the norm are on the host, so wall time is device time); the MEDIAN is reported.
//
// FLOPs per step, stated so the MFU can be checked: with N = batch x seq tokens, P the linear
// layers' weights (7 per layer) and V x H the head, a frozen base costs 2 N P in forward and 2 N P
// for the input gradients (no weight gradients): 4 N (P + V H); attention 4 B T^2 H L x (1 + 2.5)
// for forward + backward counting the causal half (FlashAttention's convention); LoRA's rank-r
// products 6 N r (in + out) per adapter. MFU = FLOPs / time / the card's dense bf16 peak (989
// TFLOP/s for H100/H200 SXM; --peak to override).
// --tiny: a 2-layer model of hidden 256 instead (a quick run, and what the emulator can afford).
// --qlora: the linear weights quantized to NF4 (double quantization) after randomize(), as QLoRA
// trains; "device memory in use" is then what a 7B QLoRA step holds after its steps (the blocks
// plus what the stream-ordered pool kept: its peak, as the pool releases nothing).
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "backend/registry.h"
#include "cuda/device.h"
#include "cuda/types.h"
#include "model/modules.h"

namespace {

using Clock = std::chrono::steady_clock;

sft::ModelConfig llama7b(bool tiny) {
  sft::ModelConfig c;
  c.arch = sft::Arch::Llama;
  c.vocab = tiny ? 1000 : 32000;
  c.hidden = tiny ? 256 : 4096;
  c.intermediate = tiny ? 688 : 11008;
  c.layers = tiny ? 2 : 32;
  c.heads = tiny ? 4 : 32;
  c.kv_heads = c.heads;
  c.rope_theta = 10000;
  c.norm_eps = 1e-5;
  return c;
}

sft::LoraOptions lora(const sft::ModelConfig& c) {
  sft::LoraOptions o;
  o.targets = sft::model::lora_modules(c.arch);
  o.rank = 64, o.alpha = 16, o.dropout = 0.05, o.seed = 1;
  return o;
}

double flops_per_step(const sft::ModelConfig& c, int64_t B, int64_t T, int64_t r) {
  const double H = double(c.hidden), I = double(c.intermediate), L = double(c.layers), N = double(B * T);
  const double P = L * (4 * H * H + 3 * H * I);  // q, k, v, o + gate, up, down
  const double base = 4 * N * (P + double(c.vocab) * H);
  const double attn = 4.0 * double(B) * double(T) * double(T) * H * L / 2 * (1 + 2.5);
  const double lora = 6 * N * double(r) * L * (4 * (H + H) + 2 * (H + I) + (I + H));
  return base + attn + lora;
}

size_t planned_bytes(const sft::ModelConfig& c, int64_t B, int64_t T, bool ckpt, bool qlora) {
  auto m = sft::make_model(c, sft::ModelOptions{sft::Device::Cuda, sft::Compute::BF16, /*meta=*/true});
  m->set_gradient_checkpointing(ckpt);
  if (qlora) m->quantize_nf4(true);
  m->add_lora(lora(c));
  sft::PlanRequest r;
  r.batch = B, r.seq = T, r.train = true, r.optimizer = true;
  m->plan(r);
  return m->memory_plan().total();
}

}  // namespace

int run_step_bench(int argc, char** argv) {
  std::vector<int64_t> seqs = {512, 2048};
  int steps = 5;
  bool ckpt = false, tiny = false, qlora = false;
  int64_t fixed_batch = 0;
  double peak = 989e12;
  std::string json;
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    if (a == "--seq" && i + 1 < argc) {
      seqs.clear();
      for (char* t = std::strtok(argv[++i], ","); t; t = std::strtok(nullptr, ",")) seqs.push_back(std::atoll(t));
    } else if (a == "--steps" && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (a == "--ckpt") ckpt = true;
    else if (a == "--tiny") tiny = true;
    else if (a == "--qlora") qlora = true;
    else if (a == "--batch" && i + 1 < argc) fixed_batch = std::atoll(argv[++i]);
    else if (a == "--peak" && i + 1 < argc) peak = std::atof(argv[++i]);
    else if (a == "--json" && i + 1 < argc) json = argv[++i];
  }
  const sft::ModelConfig c = llama7b(tiny);
  size_t free0 = 0, total = 0;
  SFT_CUDA_CHECK(cudaMemGetInfo(&free0, &total));
  cudaDeviceProp prop;
  SFT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("step bench: %s, %.1f GiB free of %.1f; model %s, %s r64 on all linear layers, bf16, checkpointing %s\n",
              prop.name, double(free0) / (1 << 30), double(total) / (1 << 30), tiny ? "tiny (2 x 256)" : "Llama-2-7B-shaped",
              qlora ? "QLoRA (NF4 base)" : "LoRA", ckpt ? "on" : "off");
  std::string rows;
  for (int64_t T : seqs) {
    int64_t B = fixed_batch > 0 ? fixed_batch : 1;
    while (!fixed_batch && B < 256 && planned_bytes(c, 2 * B, T, ckpt, qlora) < size_t(0.85 * double(free0))) B *= 2;
    const size_t plan = planned_bytes(c, B, T, ckpt, qlora);
    auto t_load = Clock::now();
    auto m = sft::make_model(c, sft::ModelOptions{sft::Device::Cuda, sft::Compute::BF16, false});
    m->set_gradient_checkpointing(ckpt);
    m->randomize(7);
    if (qlora) m->quantize_nf4(true);
    m->add_lora(lora(c));
    sft::PlanRequest r;
    r.batch = B, r.seq = T, r.train = true, r.optimizer = true;
    m->plan(r);
    const double setup_s = std::chrono::duration<double>(Clock::now() - t_load).count();
    std::vector<int32_t> ids(size_t(B * T)), targets(size_t(B * T));
    for (size_t i = 0; i < ids.size(); i++) ids[i] = int32_t((i * 7919) % size_t(c.vocab)), targets[i] = int32_t((i * 104729 + 3) % size_t(c.vocab));
    sft::AdamWOptions o;
    o.lr = 1e-4;
    std::vector<double> times;
    double loss = 0;
    for (int s = 0; s <= steps; s++) {
      const auto t0 = Clock::now();
      int64_t count = 0;
      m->zero_grad();
      loss = m->forward_backward(ids.data(), targets.data(), B, T, 1.0 / double(B * T), s, &count) / double(count);
      m->adamw_step(o);
      const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
      if (s > 0) times.push_back(dt);  // step 0 warms up (pool, cuBLASLt heuristics)
    }
    size_t free1 = 0;
    SFT_CUDA_CHECK(cudaMemGetInfo(&free1, &total));
    std::sort(times.begin(), times.end());
    const double med = times[times.size() / 2];
    const double fl = flops_per_step(c, B, T, 64);
    const double used = double(free0 - free1) / (1 << 30);
    std::printf("  seq %5ld batch %3ld: step %.3f s median of %d (min %.3f, max %.3f), %.0f tokens/s, %.1f TFLOP/s, MFU %.1f %%, "
                "plan %.1f GiB, device memory in use %.1f GiB, setup %.1f s, loss %.3f\n",
                long(T), long(B), med, int(times.size()), times.front(), times.back(), double(B * T) / med, fl / med / 1e12,
                100 * fl / med / peak, double(plan) / (1 << 30), used, setup_s, loss);
    char row[512];
    std::snprintf(row, sizeof row,
                  "%s{\"seq\": %ld, \"batch\": %ld, \"step_s\": %.5f, \"tokens_per_s\": %.1f, \"tflops\": %.2f, \"mfu\": %.4f, "
                  "\"plan_gib\": %.3f, \"used_gib\": %.3f, \"checkpointing\": %s, \"qlora\": %s}",
                  rows.empty() ? "" : ", ", long(T), long(B), med, double(B * T) / med, fl / med / 1e12, fl / med / peak,
                  double(plan) / (1 << 30), used, ckpt ? "true" : "false", qlora ? "true" : "false");
    rows += row;
  }
  if (!json.empty()) {
    FILE* f = std::fopen(json.c_str(), "w");
    if (f) std::fprintf(f, "{\"device\": \"%s\", \"rows\": [%s]}\n", prop.name, rows.c_str()), std::fclose(f);
  }
  return 0;
}
