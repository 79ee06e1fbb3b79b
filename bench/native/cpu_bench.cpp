// CPU kernel figures, per instruction set this machine runs: the FMA peak (probe), the memory
// bandwidth (probe: a large buffer summed by every thread), fp32 GEMM GFLOP/s on the training
// shapes of the ~11 M Llama at 8 x 128 tokens (and the share of the peak), and batch-1 GEMV
// (decode) as GB/s of weights against the bandwidth, for fp32, bf16 and f16 weights; bf16 GEMM
// (gemm_bf16: bf16 operands, fp32 accumulation, fp32 or bf16 C) on the same shapes beside fp32.
//
//   build/sft_cpu_bench [--isa portable|avx2|avx512|avx512bf16|amx] [--threads N] [--quick] [--cpu-time]
//   (npm run bench:cpu-kernels)
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "cpu_model.h"
#include "core/threads.h"
#include "cpu/gemm.h"
#include "cpu/isa.h"

using namespace sft;
using namespace sft::cpu;

// --cpu-time: the process's CPU seconds divided by the threads instead of wall seconds, for a
// machine shared with other work (the pool's idle workers sleep, so CPU time is work done).
static bool g_cpu_time = false;
static int g_threads = 1;
static double now() {
  if (g_cpu_time) {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double(ts.tv_sec) + ts.tv_nsec * 1e-9) / g_threads;
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best of `reps` timings of fn (the least disturbed by other processes on a shared machine).
template <typename F>
static double best_seconds(int reps, F&& fn) {
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    const double t0 = now();
    fn();
    best = std::min(best, now() - t0);
  }
  return best;
}

int main(int argc, char** argv) {
  std::vector<Isa> isas;
  bool quick = false;
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    if (a == "--quick") quick = true;
    else if (a == "--cpu-time") g_cpu_time = true;
    else if (a == "--blocking" && i + 1 < argc) {  // kc,mc,nc (tuning)
      long long kc = 0, mc = 0, nc = 0;
      if (std::sscanf(argv[++i], "%lld,%lld,%lld", &kc, &mc, &nc) == 3) set_gemm_blocking(kc, mc, nc);
    }
    else if (a == "--threads" && i + 1 < argc) set_num_threads(std::atoi(argv[++i]));
    else if (a == "--isa" && i + 1 < argc) {
      const std::string want = argv[++i];
      for (Isa x : kAllIsas)
        if (want == isa_name(x)) isas.push_back(x);
    } else {
      std::fprintf(stderr, "usage: sft_cpu_bench [--isa portable|avx2|avx512|avx512bf16|amx] [--threads N] [--quick] [--cpu-time]\n");
      return 2;
    }
  }
  if (isas.empty())
    for (Isa x : kAllIsas)
      if (isa_available(x)) isas.push_back(x);
  const int T = num_threads();
  g_threads = T;
  const int reps = quick ? 2 : 5;
  const CacheSizes& c = cache_sizes();
  std::printf("timing: %s\n", g_cpu_time ? "CPU seconds / threads (--cpu-time)" : "wall clock");
  std::printf("CPU: %s, %d threads; L1d %lld KiB, L2 %lld KiB, L3 %lld KiB; default kernels %s\n", cpu_model().c_str(), T,
              (long long)c.l1d >> 10, (long long)c.l2 >> 10, (long long)c.l3 >> 10, isa_name(default_isa()));
  std::printf("AVX512_BF16: %s; AMX (tile + bf16): %s%s\n", isa_available(Isa::Avx512Bf16) ? "yes" : "no",
              cpu_has_amx() ? "yes" : "no",
              !cpu_has_amx() ? "" : isa_available(Isa::Amx) ? " (the amx path: bf16 GEMM on tiles)" : " (the OS or build refuses it)");

  // Memory bandwidth: 256 MiB (far past any L3 here) read by every thread, a slice each.
  const int64_t nbw = int64_t(64) << 20;
  std::vector<float> big(size_t(nbw), 1.0f);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 1.f);
  double bw = 0;
  {
    const Kernels& k = *(isa_available(Isa::Avx2) ? avx2_kernels() : portable_kernels());
    volatile float sink = 0;
    const double s = best_seconds(reps, [&] {
      parallel_for(T, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; t++) sink = sink + k.stream_sum(big.data() + nbw / T * t, nbw / T);
      });
    });
    bw = double(nbw) * 4 / s / 1e9;
    std::printf("memory bandwidth (read, %d threads, 256 MiB): %.1f GB/s\n\n", T, bw);
  }

  struct Shape {
    const char* what;
    bool tb;
    int64_t M, N, K;
  };
  // ~11 M Llama (hidden 384, intermediate 1024, vocab 4096), 8 x 128 = 1024 tokens.
  const std::vector<Shape> shapes = {
      {"q/o proj   x W^T", false, 1024, 384, 384},   {"gate/up    x W^T", false, 1024, 1024, 384},
      {"down       x W^T", false, 1024, 384, 1024},  {"lm_head    x W^T", false, 1024, 4096, 384},
      {"down dx    dy W ", true, 1024, 1024, 384},   {"gate/up dx dy W ", true, 1024, 384, 1024},
      {"lm_head dx dy W ", true, 1024, 384, 4096},
  };
  std::printf("| isa | FMA peak GFLOP/s (%d threads) | shape | M x N x K | GFLOP/s | %% of peak | prepacked B GFLOP/s |"
              " bf16 GFLOP/s (fp32 C) | bf16 (bf16 C) | bf16 / fp32 |\n", T);
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  for (Isa isa : isas) {
    set_isa(isa);
    const Kernels& k = kernels();
    const int64_t iters = quick ? 2000000 : 10000000;
    double flops = 0;
    const double ps = best_seconds(reps, [&] {
      parallel_for(T, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; t++) k.fma_probe(iters);
      });
    });
    flops = k.fma_probe(1) * double(iters) * T;
    const double peak = flops / ps / 1e9;
    for (const Shape& s : shapes) {
      std::vector<float> A(size_t(s.M * s.K)), B(size_t(s.N * s.K)), C(size_t(s.M * s.N));
      for (auto& v : A) v = nd(rng);
      for (auto& v : B) v = nd(rng);
      const int64_t ldb = s.tb ? s.N : s.K;
      gemm<float>(false, s.tb, s.M, s.N, s.K, 1.f, A.data(), s.K, B.data(), ldb, 0.f, C.data(), s.N);  // warm-up
      const double t = best_seconds(reps, [&] {
        gemm<float>(false, s.tb, s.M, s.N, s.K, 1.f, A.data(), s.K, B.data(), ldb, 0.f, C.data(), s.N);
      });
      std::vector<float> P(gemm_packed_b_floats(s.N, s.K));
      PackedB pb;
      gemm_pack_b(pb, P.data(), s.tb, s.N, s.K, B.data(), ldb);
      const double tp = best_seconds(reps, [&] { gemm_prepacked(false, s.M, 1.f, A.data(), s.K, pb, 0.f, C.data(), s.N); });
      std::vector<bf16> Ah(A.size()), Bh(B.size()), Ch(C.size());
      for (size_t i = 0; i < A.size(); i++) Ah[i] = bf16(A[i]);
      for (size_t i = 0; i < B.size(); i++) Bh[i] = bf16(B[i]);
      gemm_bf16(false, s.tb, s.M, s.N, s.K, 1.f, Ah.data(), s.K, Bh.data(), ldb, 0.f, C.data(), s.N);  // warm-up
      const double th = best_seconds(reps, [&] {
        gemm_bf16(false, s.tb, s.M, s.N, s.K, 1.f, Ah.data(), s.K, Bh.data(), ldb, 0.f, C.data(), s.N);
      });
      gemm_bf16(false, s.tb, s.M, s.N, s.K, 1.f, Ah.data(), s.K, Bh.data(), ldb, 0.f, Ch.data(), s.N);
      const double thh = best_seconds(reps, [&] {
        gemm_bf16(false, s.tb, s.M, s.N, s.K, 1.f, Ah.data(), s.K, Bh.data(), ldb, 0.f, Ch.data(), s.N);
      });
      const double fl = 2.0 * s.M * s.N * s.K;
      const double gf = fl / t / 1e9, gp = fl / tp / 1e9, gh = fl / th / 1e9, ghh = fl / thh / 1e9;
      std::printf("| %s | %.0f | %s | %lld x %lld x %lld | %.0f | %.0f %% | %.0f | %.0f | %.0f | %.2f |\n", isa_name(isa), peak,
                  s.what, (long long)s.M, (long long)s.N, (long long)s.K, gf, 100 * gf / peak, gp, gh, ghh, gh / gf);
    }
  }

  // GEMV at batch 1: the decode shapes, and one 4096 x 4096 (64 MiB fp32) that no cache holds.
  std::printf("\n| isa | weights | N x K | GEMV GFLOP/s | weight GB/s | %% of bandwidth |\n|---|---|---|---|---|---|\n");
  const std::vector<std::pair<int64_t, int64_t>> gv = {{384, 384}, {1024, 384}, {384, 1024}, {4096, 384}, {4096, 4096}};
  for (Isa isa : isas) {
    set_isa(isa);
    for (auto [N, K] : gv) {
      std::vector<float> x(static_cast<size_t>(K)), W(static_cast<size_t>(N * K)), y(static_cast<size_t>(N));
      std::vector<uint16_t> H(static_cast<size_t>(N * K));
      for (auto& v : x) v = nd(rng);
      for (auto& v : W) v = nd(rng);
      for (size_t i = 0; i < H.size(); i++) {
        uint32_t b;
        std::memcpy(&b, &W[i], 4);
        H[i] = uint16_t(b >> 16);
      }
      std::vector<bf16> xh(x.size());
      for (size_t i = 0; i < x.size(); i++) xh[i] = bf16(x[i]);
      const bf16* Hb = reinterpret_cast<const bf16*>(H.data());
      const int inner = std::max<int64_t>(1, int64_t(2e7) / (N * K));
      for (int dt = 0; dt < 4; dt++) {  // fp32, bf16 and f16 weights with fp32 x; bf16 x and weights (gemm_bf16)
        auto run = [&] {
          for (int r = 0; r < inner; r++) {
            if (dt == 0) gemm<float>(false, false, 1, N, K, 1.f, x.data(), K, W.data(), K, 0.f, y.data(), N);
            else if (dt == 3) gemm_bf16(false, false, 1, N, K, 1.f, xh.data(), K, Hb, K, 0.f, y.data(), N);
            else gemv_half(dt == 1, 1, N, K, 1.f, x.data(), K, H.data(), K, 0.f, y.data(), N);
          }
        };
        run();
        const double t = best_seconds(reps, run) / inner;
        const double bytes = double(N * K) * (dt == 0 ? 4 : 2);
        const char* what = dt == 0 ? "fp32" : dt == 1 ? "bf16" : dt == 2 ? "f16" : "bf16, bf16 x";
        std::printf("| %s | %s | %lld x %lld | %.1f | %.1f | %.0f %% |\n", isa_name(isa), what,
                    (long long)N, (long long)K, 2.0 * N * K / t / 1e9, bytes / t / 1e9, 100 * bytes / t / 1e9 / bw);
      }
    }
  }
  // GEMV at decode batches (continuous batching: M sequences, one token each, W streamed once per 4
  // rows): GFLOP/s and how the time per step grows with M (ideal for a memory-bound W: flat).
  // "prepacked": the same product from gemm_pack_b's panels through gemm_prepacked (the GEMM's tile
  // kernel, M rows in one zero-padded mr strip): what decode costs if the weights are kept packed.
  std::printf("\n| isa | N x K | M | GFLOP/s | step time / M=1 | prepacked GFLOP/s | prepacked time / GEMV time |\n"
              "|---|---|---|---|---|---|---|\n");
  for (Isa isa : isas) {
    set_isa(isa);
    for (auto [N, K] : std::vector<std::pair<int64_t, int64_t>>{{768, 768}, {2048, 768}, {4096, 4096}}) {
      std::vector<float> W(static_cast<size_t>(N * K)), x(static_cast<size_t>(8 * K)), y(static_cast<size_t>(8 * N));
      for (auto& v : W) v = nd(rng);
      for (auto& v : x) v = nd(rng);
      const int inner = std::max<int64_t>(1, int64_t(2e7) / (N * K));
      std::vector<float> P(gemm_packed_b_floats(N, K));
      PackedB pb;
      gemm_pack_b(pb, P.data(), false, N, K, W.data(), K);
      double t1 = 0;
      for (int64_t M : {1, 2, 4, 8}) {
        auto run = [&] {
          for (int r = 0; r < inner; r++) gemm<float>(false, false, M, N, K, 1.f, x.data(), K, W.data(), K, 0.f, y.data(), N);
        };
        run();
        const double t = best_seconds(reps, run) / inner;
        if (M == 1) t1 = t;
        auto run_packed = [&] {
          for (int r = 0; r < inner; r++) gemm_prepacked(false, M, 1.f, x.data(), K, pb, 0.f, y.data(), N);
        };
        run_packed();
        const double tp = best_seconds(reps, run_packed) / inner;
        std::printf("| %s | %lld x %lld | %lld | %.1f | %.2f | %.1f | %.2f |\n", isa_name(isa), (long long)N, (long long)K,
                    (long long)M, 2.0 * M * N * K / t / 1e9, t / t1, 2.0 * M * N * K / tp / 1e9, tp / t);
      }
    }
  }
  return 0;
}
