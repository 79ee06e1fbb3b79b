// Elementwise and row ops of the CPU backend, fp32 beside bf16 storage (CpuBackend<bf16>: bf16
// values, fp32 math), as ns per element at training shapes (1024 rows of C = 384 ... 4096): where
// bf16 pays for its conversions and where it gains from half the bytes.
//
//   build/sft_cpu_ew_bench [--threads N] [--rows R] [--reps K]   (default 1 thread: per-core figures)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "cpu_model.h"
#include "core/threads.h"
#include "cpu/ops.h"

using namespace sft;
using namespace sft::cpu;

static double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Median of `reps` timings (a shared machine: the median resists the odd disturbed run).
template <typename F>
static double median_seconds(int reps, F&& fn) {
  std::vector<double> t;
  fn();  // warm-up: pages touched, caches filled
  for (int r = 0; r < reps; r++) {
    const double t0 = now();
    fn();
    t.push_back(now() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// One type's buffers for every op at rows x C.
template <typename T>
struct Bufs {
  std::vector<T> a, b, c, d, w, bias, table;
  std::vector<Acc<T>> stat, stat2, dw, db, cs, sn;
  std::vector<int32_t> ids;
  Bufs(int64_t R, int64_t C, std::mt19937& rng) {
    std::normal_distribution<float> nd(0.f, 1.f);
    auto fill = [&](std::vector<T>& v, size_t n) {
      v.resize(n);
      for (auto& x : v) x = T(nd(rng));
    };
    const size_t n = size_t(R * C);
    fill(a, n), fill(b, n), fill(c, n), fill(d, n), fill(w, size_t(C)), fill(bias, size_t(C)), fill(table, size_t(4096 * C));
    stat.assign(size_t(R), Acc<T>(1)), stat2.assign(size_t(R), Acc<T>(0)), dw.assign(size_t(C), 0), db.assign(size_t(C), 0);
    cs.resize(size_t(2048 * 64)), sn.resize(size_t(2048 * 64));
    for (size_t i = 0; i < cs.size(); i++) cs[i] = Acc<T>(std::cos(0.001 * double(i))), sn[i] = Acc<T>(std::sin(0.001 * double(i)));
    ids.resize(size_t(R));
    for (auto& x : ids) x = int32_t(rng() % 4096);
  }
};

template <typename T>
static double time_op(const std::string& op, Bufs<T>& B, int64_t R, int64_t C, int reps) {
  const int64_t n = R * C;
  T *a = B.a.data(), *b = B.b.data(), *c = B.c.data(), *d = B.d.data();
  auto run = [&](auto f) { return median_seconds(reps, f) / double(n) * 1e9; };
  if (op == "rmsnorm.fwd") return run([&] { rmsnorm_forward<T>(a, B.stat.data(), b, B.w.data(), R, C, 1e-5); });
  if (op == "rmsnorm.bwd")
    return run([&] { rmsnorm_backward<T>(a, B.dw.data(), b, c, B.w.data(), B.stat.data(), R, C); });
  if (op == "layernorm.fwd")
    return run([&] { layernorm_forward<T>(a, B.stat2.data(), B.stat.data(), b, B.w.data(), B.bias.data(), R, C, 1e-5); });
  if (op == "layernorm.bwd")
    return run([&] {
      layernorm_backward<T>(a, B.dw.data(), B.db.data(), b, c, B.w.data(), B.stat2.data(), B.stat.data(), R, C);
    });
  if (op == "rope.fwd" || op == "rope.bwd") {
    const int hd = 64, heads = int(C / hd);
    return run([&] {
      if (op == "rope.fwd") rope_forward<T>(a, C, R, 128, 0, heads, hd, B.cs.data(), B.sn.data());
      else rope_backward<T>(a, C, R, 128, 0, heads, hd, B.cs.data(), B.sn.data());
    });
  }
  if (op == "swiglu.fwd") return run([&] { swiglu_forward<T>(a, b, c, n); });
  if (op == "swiglu.bwd") return run([&] { swiglu_backward<T>(a, d, b, c, b, n); });
  if (op == "gelu.fwd") return run([&] { gelu_tanh_forward<T>(a, b, n); });
  if (op == "gelu.bwd") return run([&] { gelu_tanh_backward<T>(a, b, c, n); });
  if (op == "add_bias") return run([&] { add_bias<T>(a, B.bias.data(), R, C); });
  if (op == "embedding.fwd") return run([&] { embedding_forward<T>(a, B.ids.data(), B.table.data(), R, C); });
  if (op == "xent.grad") {
    // R/8 rows of a vocabulary 8 C wide (the same elements), logits refreshed outside the timing
    // would cost as much as the op: the gradient of a gradient is as good a workload.
    std::vector<int32_t> t(size_t(R / 8), 1);
    return run([&] { cross_entropy<T>(a, t.data(), R / 8, 8 * C, Acc<T>(1), true, nullptr); });
  }
  return -1;
}

int main(int argc, char** argv) {
  int threads = 1, reps = 15;
  int64_t R = 1024;
  for (int i = 1; i < argc; i++) {
    const std::string s = argv[i];
    if (s == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (s == "--rows" && i + 1 < argc) R = std::atoll(argv[++i]);
    else if (s == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: sft_cpu_ew_bench [--threads N] [--rows R] [--reps K]\n");
      return 2;
    }
  }
  set_num_threads(threads);
  std::printf("CPU: %s, %d thread(s), %lld rows; ns per element (median of %d), fp32 | bf16 | bf16/fp32\n",
              cpu_model().c_str(), threads, (long long)R, reps);
  const char* ops[] = {"rmsnorm.fwd", "rmsnorm.bwd", "layernorm.fwd", "layernorm.bwd", "rope.fwd", "rope.bwd",
                       "swiglu.fwd",  "swiglu.bwd",  "gelu.fwd",      "gelu.bwd",      "add_bias", "embedding.fwd",
                       "xent.grad"};
  std::mt19937 rng(1);
  for (int64_t C : {384, 768, 2048, 4096}) {
    Bufs<float> F(R, C, rng);
    Bufs<bf16> H(R, C, rng);
    std::printf("C = %lld\n", (long long)C);
    for (const char* op : ops) {
      // interleaved: fp32, bf16, fp32, bf16; the lower of each pair
      const double f1 = time_op<float>(op, F, R, C, reps), h1 = time_op<bf16>(op, H, R, C, reps);
      const double f2 = time_op<float>(op, F, R, C, reps), h2 = time_op<bf16>(op, H, R, C, reps);
      const double f = std::min(f1, f2), h = std::min(h1, h2);
      std::printf("  %-14s %7.3f | %7.3f | %5.2f\n", op, f, h, h / f);
    }
  }
  return 0;
}
