// sft_cuda_tests --bench: times every CUDA kernel at Llama-2-7B shapes (hidden 4096, intermediate
// 11008, vocab 32000, 32 heads of 128) over a batch of 16384 tokens, and the causal attention
// forward + backward at sequence lengths 512, 1024 and 2048 (batch = tokens / seq, so each length
// does the same token count). Reports milliseconds, GB/s for the memory-bound kernels (bytes that
// must move at least once) and TFLOP/s for GEMMs and attention (causal attention counts half the
// square: 4 B nh T^2 hd / 2 for the forward; the backward counts 2.5x that, FlashAttention-2's
// convention, although this backward does 7 tile products where FA2 does 5: it recomputes P for dQ).
//
//   --json FILE   also write the results as JSON
//   --quick       tiny shapes (a smoke test of this code, e.g. under the CPU emulator)
//   --tokens N    tokens per batch (default 16384)
//   --attention   only the bf16 attention (tensor cores) at the last sequence length, head_dim 128
//                 (MHA and GQA 4:1) and 64, beside one bf16 GEMM, ending with an "attention:" line
//                 that gives fwd+bwd TFLOP/s as a share of the GEMM's (issue 14's target: >= 60 %)
// NOT YET RUN ON A GPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cpu/quant.h"
#include "cuda/ops.cuh"
#include "cuda_test_util.cuh"

namespace cu = sft::cuda;
using cu::bf16;

namespace {

struct Shape {
  int64_t tokens = 16384, hidden = 4096, inter = 11008, vocab = 32000;
  int heads = 32, head_dim = 128;
  std::vector<int64_t> seqs = {512, 1024, 2048};
  int64_t adam_params = 64 << 20;
};

struct Result {
  std::string name, shape;
  double ms, gbps, tflops;
};
std::vector<Result> results;

// Median milliseconds of f over single timed calls: one warm-up call, then enough calls for
// ~200 ms (3..50), each between its own pair of events (a median, not a mean: one slow call from a
// clock change or another process does not move it).
double time_ms(const std::function<void()>& f) {
  cudaEvent_t a, b;
  SFT_CUDA_CHECK(cudaEventCreate(&a));
  SFT_CUDA_CHECK(cudaEventCreate(&b));
  auto once = [&] {
    SFT_CUDA_CHECK(cudaEventRecord(a));
    f();
    SFT_CUDA_CHECK(cudaEventRecord(b));
    SFT_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    SFT_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    return double(ms);
  };
  f();
  const double first = once();
  const int iters = std::max(3, std::min(50, int(200.0 / std::max(first, 0.01))));
  std::vector<double> t;
  for (int i = 0; i < iters; i++) t.push_back(once());
  SFT_CUDA_CHECK(cudaEventDestroy(a));
  SFT_CUDA_CHECK(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void record(const std::string& name, const std::string& shape, double ms, double bytes, double flops) {
  const Result r{name, shape, ms, bytes > 0 ? bytes / ms / 1e6 : 0, flops > 0 ? flops / ms / 1e9 : 0};
  results.push_back(r);
  std::printf("%-34s %-44s %9.3f ms", name.c_str(), shape.c_str(), ms);
  if (r.gbps > 0) std::printf("  %8.1f GB/s", r.gbps);
  if (r.tflops > 0) std::printf("  %7.2f TFLOP/s", r.tflops);
  std::printf("\n");
  std::fflush(stdout);
}

std::string dims(std::initializer_list<int64_t> d) {
  std::string s;
  for (int64_t x : d) s += (s.empty() ? "" : "x") + std::to_string(x);
  return s;
}

std::mt19937_64 rng(7);

// Device arrays of random values (bf16 or fp32); contents barely matter for timing, but NaN-free
// inputs keep every kernel on its normal path.
template <typename T>
Dev<T> rand_dev(int64_t n, double scale = 1.0) {
  return Dev<T>(randf(n, rng, scale));
}

void bench_elementwise(const Shape& s) {
  const int64_t N = s.tokens, C = s.hidden, I = s.inter;
  {
    auto x = rand_dev<bf16>(N * C), w = rand_dev<bf16>(C), y = rand_dev<bf16>(N * C), dy = rand_dev<bf16>(N * C);
    Dev<float> rstd(N), dw(C);
    record("rmsnorm fwd bf16", dims({N, C}),
           time_ms([&] { cu::rmsnorm_forward<bf16>(y.p, rstd.p, x.p, w.p, N, C, 1e-6); }), 2.0 * N * C * 2, 0);
    record("rmsnorm bwd bf16 (dx + dw)", dims({N, C}),
           time_ms([&] { cu::rmsnorm_backward<bf16>(y.p, dw.p, dy.p, x.p, w.p, rstd.p, N, C); }), 4.0 * N * C * 2, 0);
  }
  {
    const int nh = s.heads, hd = s.head_dim;
    const int64_t ld = 3 * int64_t(nh) * hd, half = hd / 2, max_pos = 4096;
    auto qkv = rand_dev<bf16>(N * ld);
    Dev<float> cs(randf(max_pos * half, rng)), sn(randf(max_pos * half, rng));
    record("rope fwd bf16 (q and k)", dims({N, 2 * int64_t(nh) * hd}), time_ms([&] {
             cu::rope_forward<bf16>(qkv.p, ld, N, std::min<int64_t>(N, 2048), 0, 2 * nh, hd, cs.p, sn.p);
           }),
           2.0 * N * 2 * nh * hd * 2, 0);
  }
  {
    auto g = rand_dev<bf16>(N * I), u = rand_dev<bf16>(N * I), y = rand_dev<bf16>(N * I);
    record("swiglu fwd bf16", dims({N, I}), time_ms([&] { cu::swiglu_forward<bf16>(y.p, g.p, u.p, N * I); }),
           3.0 * N * I * 2, 0);
    auto dg = rand_dev<bf16>(N * I), du = rand_dev<bf16>(N * I);
    record("swiglu bwd bf16", dims({N, I}),
           time_ms([&] { cu::swiglu_backward<bf16>(dg.p, du.p, y.p, g.p, u.p, N * I); }), 7.0 * N * I * 2, 0);
  }
  {
    const int64_t V = s.vocab;
    std::vector<int32_t> ids(N);
    for (int64_t i = 0; i < N; i++) ids[i] = int32_t((i * 7919) % V);
    Dev<int32_t> gids(ids);
    auto table = rand_dev<bf16>(V * C), y = rand_dev<bf16>(N * C);
    Dev<float> dtable(V * C);
    record("embedding fwd bf16", dims({N, C}), time_ms([&] { cu::embedding_forward<bf16>(y.p, gids.p, table.p, N, C); }),
           2.0 * N * C * 2, 0);
    record("embedding bwd bf16->fp32", dims({N, C}),
           time_ms([&] { cu::embedding_backward<bf16>(dtable.p, y.p, gids.p, N, C); }), N * C * (2.0 + 8.0), 0);
  }
  {
    const int64_t V = s.vocab;
    std::vector<int32_t> t(N);
    for (int64_t i = 0; i < N; i++) t[i] = i % 10 == 0 ? -100 : int32_t((i * 31) % V);
    Dev<int32_t> gt(t);
    auto logits = rand_dev<bf16>(N * V);
    Dev<double> row(N);
    Dev<double> sum(1);
    Dev<long long> count(1);
    // With grad the logits turn into gradients; timing repeats on them (finite values throughout).
    record("cross-entropy fwd+bwd bf16", dims({N, V}), time_ms([&] {
             cu::cross_entropy_async<bf16>(logits.p, gt.p, N, V, 1.f / N, true, row.p, sum.p, count.p);
           }),
           2.0 * N * V * 2, 0);
  }
  {
    const int64_t n = s.adam_params;
    auto p = rand_dev<float>(n), g = rand_dev<float>(n, 1e-3);
    Dev<float> m(n), v(n);
    m.zero();
    v.zero();
    int64_t step = 0;
    record("adamw fp32", dims({n}), time_ms([&] {
             cu::adamw_update(p.p, g.p, m.p, v.p, n, 1e-4, 0.9, 0.999, 1e-8, 0.0, ++step, 1.0);
           }),
           n * 28.0, 0);
    const float* gp = g.p;
    record("global grad norm fp32 (1 tensor)", dims({n}),
           time_ms([&] { cu::global_grad_norm(&gp, &n, 1); }), n * 4.0, 0);
  }
  {
    const int64_t n = s.hidden * s.inter;
    const int64_t blocks = (n + 63) / 64;
    std::vector<uint8_t> packed((n + 1) / 2), aq(blocks);
    for (size_t i = 0; i < packed.size(); i++) packed[i] = uint8_t(i * 37);
    for (size_t i = 0; i < aq.size(); i++) aq[i] = uint8_t(i * 11);
    Dev<uint8_t> gp(packed), gaq(aq);
    Dev<float> a2(randf((blocks + 255) / 256, rng)), code(sft::cpu::dynamic_map_signed());
    auto out = rand_dev<bf16>(n);
    record("nf4 dequantize (double quant) ->bf16", dims({s.inter, s.hidden}), time_ms([&] {
             cu::nf4_dequantize_dq<bf16>(out.p, gp.p, gaq.p, a2.p, code.p, 0.01f, n);
           }),
           n * 2.5, 0);
  }
}

void bench_gemm(const Shape& s) {
  const int64_t M = s.tokens, H = s.hidden, I = s.inter;
  struct G {
    const char* name;
    bool ta, tb;
    int64_t M, N, K;
  };
  const G shapes[] = {
      {"gemm bf16 x W^T (q/o proj)", false, false, M, H, H},
      {"gemm bf16 x W^T (gate/up proj)", false, false, M, I, H},
      {"gemm bf16 dy W (down proj dx)", false, true, M, H, I},
      {"gemm bf16 dy^T x (weight grad)", true, true, H, H, M},
      {"gemm bf16 x A^T (LoRA r 16)", false, false, M, 16, H},
  };
  for (const G& g : shapes) {
    const int64_t lda = g.ta ? g.M : g.K, ldb = g.tb ? g.N : g.K;
    auto A = rand_dev<bf16>(g.M * g.K), B = rand_dev<bf16>(g.N * g.K), C = rand_dev<bf16>(g.M * g.N);
    record(g.name, dims({g.M, g.N, g.K}), time_ms([&] {
             cu::gemm<bf16, bf16>(g.ta, g.tb, g.M, g.N, g.K, 1.f, A.p, lda, B.p, ldb, 0.f, C.p, g.N);
           }),
           0, 2.0 * g.M * g.N * g.K);
  }
  {
    const int64_t n = std::min<int64_t>(H, 4096);
    auto A = rand_dev<float>(n * n), B = rand_dev<float>(n * n), C = rand_dev<float>(n * n);
    record("gemm fp32 (no TF32)", dims({n, n, n}), time_ms([&] {
             cu::gemm<float, float>(false, false, n, n, n, 1.f, A.p, n, B.p, n, 0.f, C.p, n);
           }),
           0, 2.0 * n * n * n);
  }
}

// Attention on a fused qkv buffer (the model's layout): q at column 0, k at nh*hd, v at (nh+nkv)*hd.
template <typename T>
void bench_attention(const Shape& s, int64_t Tlen, int nh, int nkv, int hd) {
  const int64_t B = std::max<int64_t>(1, s.tokens / Tlen), rows = B * Tlen;
  const int64_t ld = int64_t(nh + 2 * nkv) * hd, ldo = int64_t(nh) * hd;
  auto qkv = rand_dev<T>(rows * ld), dout = rand_dev<T>(rows * ldo);
  Dev<T> out(rows * ldo), dqkv(rows * ld);
  Dev<float> lse(B * nh * Tlen);
  dqkv.zero();
  const T* q = qkv.p;
  const T* k = qkv.p + int64_t(nh) * hd;
  const T* v = qkv.p + int64_t(nh + nkv) * hd;
  const double fwd_flops = 4.0 * B * nh * double(Tlen) * double(Tlen) * hd / 2;
  const std::string type = std::is_same<T, float>::value ? "fp32" : "bf16";
  const std::string shape = "B " + std::to_string(B) + " T " + std::to_string(Tlen) + " nh " + std::to_string(nh) +
                            " nkv " + std::to_string(nkv) + " hd " + std::to_string(hd);
  auto fwd = [&] { cu::attention_forward<T>(out.p, lse.p, q, ld, k, v, ld, B, Tlen, Tlen, 0, nh, nkv, hd); };
  auto bwd = [&] {
    cu::attention_backward<T>(dqkv.p, dqkv.p + int64_t(nh) * hd, dqkv.p + int64_t(nh + nkv) * hd, dout.p, out.p, lse.p,
                              q, ld, k, v, ld, B, Tlen, Tlen, 0, nh, nkv, hd);
  };
  const double tf = time_ms(fwd);
  record("attention fwd " + type, shape, tf, 0, fwd_flops);
  const double tb = time_ms(bwd);
  record("attention bwd " + type, shape, tb, 0, 2.5 * fwd_flops);
  record("attention fwd+bwd " + type, shape, tf + tb, 0, 3.5 * fwd_flops);
}

// The attention-only run (--attention): bf16 at the last sequence length, then one square bf16
// GEMM as the card's measured tensor-core rate, and the summary line gpu-check.sh quotes.
void bench_attention_only(const Shape& s) {
  const int64_t T = s.seqs.back();
  bench_attention<bf16>(s, T, s.heads, s.heads, s.head_dim);
  const Result mha = results[results.size() - 1], fwd = results[results.size() - 3], bwd = results[results.size() - 2];
  bench_attention<bf16>(s, T, s.heads, s.heads / 4 > 0 ? s.heads / 4 : 1, s.head_dim);
  bench_attention<bf16>(s, T, s.heads, s.heads, 64);
  const int64_t n = std::min<int64_t>(s.hidden, 8192);
  auto A = rand_dev<bf16>(n * n), B = rand_dev<bf16>(n * n), C = rand_dev<bf16>(n * n);
  record("gemm bf16 (reference rate)", dims({n, n, n}), time_ms([&] {
           cu::gemm<bf16, bf16>(false, false, n, n, n, 1.f, A.p, n, B.p, n, 0.f, C.p, n);
         }),
         0, 2.0 * n * n * n);
  const double gemm = results.back().tflops;
  std::printf("attention: bf16 fwd+bwd %s: %.1f TFLOP/s (fwd %.1f, bwd %.1f) = %.0f %% of bf16 GEMM %.1f TFLOP/s\n",
              mha.shape.c_str(), mha.tflops, fwd.tflops, bwd.tflops, gemm > 0 ? 100.0 * mha.tflops / gemm : 0.0, gemm);
}

void write_json(const char* path, const cudaDeviceProp& prop) {
  FILE* f = std::fopen(path, "w");
  if (!f) {
    std::printf("cannot write %s\n", path);
    return;
  }
  std::fprintf(f, "{\n  \"device\": \"%s\",\n  \"gemm\": \"%s\",\n  \"results\": [\n", prop.name,
               cu::gemm_uses_cublaslt() ? "cuBLASLt" : "tiled fallback");
  for (size_t i = 0; i < results.size(); i++) {
    const Result& r = results[i];
    std::fprintf(f, "    {\"name\": \"%s\", \"shape\": \"%s\", \"ms\": %.4f, \"gbps\": %.1f, \"tflops\": %.3f}%s\n",
                 r.name.c_str(), r.shape.c_str(), r.ms, r.gbps, r.tflops, i + 1 < results.size() ? "," : "");
  }
  std::fprintf(f, "  ]\n}\n");
  std::fclose(f);
}

}  // namespace

int run_bench(int argc, char** argv) {
  Shape s;
  const char* json = nullptr;
  bool attention_only = false;
  for (int i = 1; i < argc; i++) {
    if (!std::strcmp(argv[i], "--attention")) attention_only = true;
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
    else if (!std::strcmp(argv[i], "--tokens") && i + 1 < argc) s.tokens = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--quick")) {
      s.tokens = 256, s.hidden = 256, s.inter = 512, s.vocab = 1000, s.heads = 2, s.head_dim = 64;
      s.seqs = {128};
      s.adam_params = 1 << 12;
    }
  }
  cudaDeviceProp prop;
  SFT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, %.1f GiB; GEMM via %s; %lld tokens per batch\n", prop.name,
              prop.multiProcessorCount, double(prop.totalGlobalMem) / (1 << 30),
              cu::gemm_uses_cublaslt() ? "cuBLASLt" : "the tiled fallback kernel", (long long)s.tokens);
  try {
    if (attention_only) {
      bench_attention_only(s);
      SFT_CUDA_CHECK(cudaDeviceSynchronize());
      if (json) write_json(json, prop);
      return 0;
    }
    bench_elementwise(s);
    bench_gemm(s);
    for (int64_t T : s.seqs) bench_attention<bf16>(s, T, s.heads, s.heads, s.head_dim);
    const int64_t T_last = s.seqs.back();
    bench_attention<bf16>(s, T_last, s.heads, s.heads / 4 > 0 ? s.heads / 4 : 1, s.head_dim);  // GQA 4:1
    bench_attention<bf16>(s, T_last, s.heads, s.heads, 64);                                    // head_dim 64
    bench_attention<float>(s, s.seqs.front(), s.heads, s.heads, s.head_dim);
    SFT_CUDA_CHECK(cudaDeviceSynchronize());
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    if (json) write_json(json, prop);
    return 1;
  }
  if (json) write_json(json, prop);
  return 0;
}
