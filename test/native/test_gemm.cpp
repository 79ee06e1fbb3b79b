// The fp32 GEMM and GEMV on every instruction set this machine runs (cpu/isa.h), against a
// double-precision product: awkward shapes (1, 7, 17, 65, 300 in each of M, N, K), all four
// transposed layouts, padded strides, alpha and beta (beta = 0 must ignore C, NaN included), tiny
// blocking that splits every dimension, prepacked B equal to packing per call bit for bit, results
// that do not depend on the thread count, and bf16 / f16 weights in the GEMV. The bf16 GEMM
// (gemm_bf16, gemm_q4_bf16) on the same instruction sets against double over the same bf16 values.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "core/random.h"
#include "core/threads.h"
#include "cpu/gemm.h"
#include "cpu/isa.h"
#include "cpu/quant.h"

using namespace sft::cpu;

namespace {

struct Case {
  bool ta, tb;
  int64_t M, N, K, lda, ldb, ldc;
  float alpha, beta;
  std::vector<float> A, B, C0;
  std::vector<double> ref, bound;  // the exact product, and a rounding bound per element
};

Case make_case(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, float beta, std::mt19937_64& rng) {
  std::normal_distribution<float> d(0.f, 1.f);
  Case c{ta, tb, M, N, K, (ta ? M : K) + 3, (tb ? N : K) + 2, N + 5, alpha, beta, {}, {}, {}, {}, {}};
  c.A.resize(size_t((ta ? K : M) * c.lda));
  c.B.resize(size_t((tb ? K : N) * c.ldb));
  c.C0.resize(size_t(M * c.ldc));
  for (auto& v : c.A) v = d(rng);
  for (auto& v : c.B) v = d(rng);
  for (auto& v : c.C0) v = beta == 0.f ? std::numeric_limits<float>::quiet_NaN() : d(rng);
  c.ref.resize(size_t(M * N));
  c.bound.resize(size_t(M * N));
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      double s = 0, a = 0;
      for (int64_t k = 0; k < K; k++) {
        const double x = ta ? c.A[k * c.lda + m] : c.A[m * c.lda + k];
        const double y = tb ? c.B[k * c.ldb + n] : c.B[n * c.ldb + k];
        s += x * y, a += std::fabs(x * y);
      }
      const double old = beta == 0.f ? 0.0 : double(beta) * c.C0[m * c.ldc + n];
      c.ref[m * N + n] = double(alpha) * s + old;
      // fp32 summation in any order: (K + 2) roundings of at most 2^-24 of the running magnitude.
      c.bound[m * N + n] = double(K + 2) * 6e-8 * (std::fabs(alpha) * a + std::fabs(old)) + 1e-30;
    }
  return c;
}

std::vector<float> run(const Case& c) {
  std::vector<float> C = c.C0;
  gemm<float>(c.ta, c.tb, c.M, c.N, c.K, c.alpha, c.A.data(), c.lda, c.B.data(), c.ldb, c.beta, C.data(), c.ldc);
  return C;
}

// The worst error relative to the bound (< 1 passes); padding columns of C must be untouched.
double check(const Case& c, const std::vector<float>& C) {
  double worst = 0;
  for (int64_t m = 0; m < c.M; m++) {
    for (int64_t n = 0; n < c.N; n++) {
      const double e = std::fabs(double(C[m * c.ldc + n]) - c.ref[m * c.N + n]) / c.bound[m * c.N + n];
      worst = std::isfinite(e) ? std::max(worst, e) : 1e30;
    }
    for (int64_t n = c.N; n < c.ldc; n++) {
      const float a = C[m * c.ldc + n], b = c.C0[m * c.ldc + n];
      if (std::memcmp(&a, &b, 4) != 0) worst = 1e30;
    }
  }
  return worst;
}

std::vector<Isa> isas() {
  std::vector<Isa> v;
  for (Isa i : kAllIsas)
    if (isa_available(i)) v.push_back(i);
  return v;
}

uint16_t to_bf16(float f) {  // round to nearest even
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return uint16_t((b + 0x7fff + ((b >> 16) & 1)) >> 16);
}
float from_bf16(uint16_t h) {
  const uint32_t b = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
uint16_t to_f16(float f) {
  const _Float16 h = static_cast<_Float16>(f);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
float from_f16(uint16_t b) {
  _Float16 h;
  std::memcpy(&h, &b, 2);
  return static_cast<float>(h);
}

}  // namespace

void check_gemm_bf16();

void check_gemm_isas() {
  std::mt19937_64 rng(77);
  const int64_t dims[] = {1, 7, 17, 65, 300};
  std::vector<Case> cases;
  int i = 0;
  for (int64_t M : dims)
    for (int64_t N : dims)
      for (int64_t K : dims)
        for (int t = 0; t < 4; t++, i++)
          cases.push_back(make_case(t & 1, t & 2, M, N, K, i % 3 == 0 ? 1.f : -0.7f, i % 2 ? 0.f : 1.3f, rng));
  const Isa keep = current_isa();
  for (Isa isa : isas()) {
    set_isa(isa);
    double worst = 0;
    std::string where;
    for (const Case& c : cases) {
      const double e = check(c, run(c));
      if (e > worst)
        worst = e, where = std::to_string(c.M) + "x" + std::to_string(c.N) + "x" + std::to_string(c.K) + (c.ta ? " ta" : "") +
                          (c.tb ? " tb" : "") + (c.beta == 0.f ? " beta 0" : " beta 1.3");
    }
    report(std::string("gemm ") + isa_name(isa) + ": 500 shapes/layouts vs double (worst " + where + ")", worst, 1.0);

    // Blocking small enough that K, M and N each span several blocks.
    set_gemm_blocking(16, 2 * kernels().mr, 2 * kernels().nr);
    worst = 0;
    for (const Case& c : cases)
      if ((c.M == 17 || c.M == 65) && c.N >= 65 && c.K == 300) worst = std::max(worst, check(c, run(c)));
    set_gemm_blocking(0, 0, 0);
    report(std::string("gemm ") + isa_name(isa) + ": tiny blocking (kc 16, 2 tiles per block) vs double", worst, 1.0);

    // Deep K at the machine's blocking: one block fitted to K (700), equal blocks (800, 1100, 1600),
    // through the driver and through panels packed once (which must cut K as the driver does).
    worst = 0;
    bool deep_same = true;
    for (int64_t K : {700, 800, 1100, 1600})
      for (int t = 0; t < 4; t++) {
        const Case c = make_case(t & 1, t & 2, 40, 70, K, 0.9f, t == 2 ? 0.f : 0.6f, rng);
        const std::vector<float> got = run(c);
        worst = std::max(worst, check(c, got));
        std::vector<float> P(gemm_packed_b_floats(c.N, c.K));
        PackedB pb;
        gemm_pack_b(pb, P.data(), c.tb, c.N, c.K, c.B.data(), c.ldb);
        std::vector<float> C = c.C0;
        gemm_prepacked(c.ta, c.M, c.alpha, c.A.data(), c.lda, pb, c.beta, C.data(), c.ldc);
        deep_same = deep_same && std::memcmp(C.data(), got.data(), C.size() * 4) == 0;
      }
    report(std::string("gemm ") + isa_name(isa) + ": K 700..1600 at the default blocking vs double", worst, 1.0);
    if (!deep_same) failures++;
    std::printf("%s gemm %s: K 700..1600, prepacked B gives the same bits\n", deep_same ? "ok  " : "FAIL", isa_name(isa));

    // A frozen weight packed once gives the same bits as packing it in every call.
    bool same = true;
    for (const Case& c : cases) {
      if (c.M <= kGemvMaxM || c.N < 17) continue;
      if (c.ta && c.tb && c.M <= kernels().nr && c.N >= 2 * kernels().mr) continue;  // a weight gradient's shape (gemm.cpp)
      std::vector<float> P(gemm_packed_b_floats(c.N, c.K));
      PackedB pb;
      gemm_pack_b(pb, P.data(), c.tb, c.N, c.K, c.B.data(), c.ldb);
      std::vector<float> C = c.C0;
      gemm_prepacked(c.ta, c.M, c.alpha, c.A.data(), c.lda, pb, c.beta, C.data(), c.ldc);
      same = same && std::memcmp(C.data(), run(c).data(), C.size() * 4) == 0;
    }
    if (!same) failures++;
    std::printf("%s gemm %s: prepacked B gives the same bits as packing per call\n", same ? "ok  " : "FAIL", isa_name(isa));

    // One thread or two: the same bits (GEMM tiles and GEMV row groups do not depend on the split).
    same = true;
    std::vector<std::vector<float>> one;
    sft::set_num_threads(1);
    for (const Case& c : cases)
      if (c.N >= 65 && c.K >= 65) one.push_back(run(c));
    sft::set_num_threads(2);
    size_t j = 0;
    for (const Case& c : cases)
      if (c.N >= 65 && c.K >= 65) same = same && std::memcmp(one[j++].data(), run(c).data(), size_t(c.M * c.ldc) * 4) == 0;
    sft::set_num_threads(0);
    if (!same) failures++;
    std::printf("%s gemm %s: 1 and 2 threads give the same bits\n", same ? "ok  " : "FAIL", isa_name(isa));

    // GEMV with bf16 and f16 weights (fp32 accumulation) against double over the decoded weights;
    // f16 includes subnormals and a zero of each sign.
    for (int bf = 0; bf < 2; bf++) {
      worst = 0;
      for (int64_t M : {1, 2, 3, 4, 7})
        for (int64_t N : dims)
          for (int64_t K : dims) {
            std::normal_distribution<float> d(0.f, 1.f);
            const int64_t ldw = K + 1, ldc = N + 2;
            std::vector<float> x(size_t(M * K)), C(size_t(M * ldc)), C0(size_t(M * ldc));
            std::vector<uint16_t> Wh(size_t(N * ldw));
            for (auto& v : x) v = d(rng);
            for (auto& v : C0) v = d(rng);
            for (size_t j = 0; j < Wh.size(); j++) {
              const float w = j % 11 == 3 ? d(rng) * 3e-6f : j % 13 == 5 ? (j % 2 ? -0.f : 0.f) : d(rng);
              Wh[j] = bf ? to_bf16(w) : to_f16(w);
            }
            C = C0;
            const float alpha = 0.9f, beta = M % 2 ? 0.f : 0.5f;
            gemv_half(bf == 1, M, N, K, alpha, x.data(), K, Wh.data(), ldw, beta, C.data(), ldc);
            for (int64_t m = 0; m < M; m++)
              for (int64_t n = 0; n < N; n++) {
                double s = 0, a = 0;
                for (int64_t k = 0; k < K; k++) {
                  const double w = bf ? from_bf16(Wh[n * ldw + k]) : from_f16(Wh[n * ldw + k]);
                  s += x[m * K + k] * w, a += std::fabs(x[m * K + k] * w);
                }
                const double old = beta == 0.f ? 0.0 : double(beta) * C0[m * ldc + n];
                const double bound = double(K + 2) * 6e-8 * (alpha * a + std::fabs(old)) + 1e-30;
                const double e = std::fabs(C[m * ldc + n] - (alpha * s + old)) / bound;
                worst = std::isfinite(e) ? std::max(worst, e) : 1e30;
              }
          }
      report(std::string("gemv ") + isa_name(isa) + (bf ? ": bf16" : ": f16") + " weights vs double", worst, 1.0);
    }
    // LoRA's rank-16 products at training size (the skinny kernel, gemm.cpp): x A^T, dy B, dB and dA
    // over 1000 tokens, against double and with the same bits on one thread or two.
    {
      std::mt19937_64 lr(5);
      const Case lora[] = {make_case(false, false, 1000, 16, 384, 1.f, 0.f, lr), make_case(false, true, 1000, 16, 384, 2.f, 0.f, lr),
                           make_case(true, true, 384, 16, 1000, 2.f, 1.f, lr), make_case(true, true, 16, 384, 1000, 1.f, 1.f, lr),
                           make_case(false, false, 333, 5, 70, -0.5f, 1.3f, lr)};
      double lw = 0;
      bool lsame = true;
      for (const Case& c : lora) {
        sft::set_num_threads(1);
        const std::vector<float> one = run(c);
        sft::set_num_threads(2);
        const std::vector<float> two = run(c);
        lw = std::max(lw, check(c, two));
        lsame = lsame && std::memcmp(one.data(), two.data(), one.size() * 4) == 0;
      }
      sft::set_num_threads(0);
      report(std::string("gemm ") + isa_name(isa) + ": LoRA rank-16 shapes vs double", lw, 1.0);
      if (!lsame) failures++;
      std::printf("%s gemm %s: LoRA rank-16 shapes give the same bits on 1 and 2 threads\n", lsame ? "ok  " : "FAIL", isa_name(isa));
    }
    // LoRA dropout masks: each kernel drops exactly the elements uniform01_key(key, i) < p drops
    // (the mask every backend regenerates), at an odd offset and length, p = 0 dropping nothing.
    for (double p : {0.0, 0.05, 0.3, 0.5, 0.999}) {
      const int64_t n = 1037, i0 = 4099;
      const uint64_t key = sft::rng::stream_key(11, sft::rng::dropout_stream(3));
      const float kp = float(1.0 / (1.0 - p));
      std::vector<float> x(n), out(n, 0.f), acc(n, 2.f);
      for (int64_t j = 0; j < n; j++) x[size_t(j)] = float(j % 13) - 6.f;
      kernels().dropout(out.data(), x.data(), n, i0, key, sft::rng::drop_threshold(p), kp);
      kernels().dropout_add(acc.data(), x.data(), n, i0, key, sft::rng::drop_threshold(p), kp);
      int64_t bad = 0;
      for (int64_t j = 0; j < n; j++) {
        const bool drop = sft::rng::uniform01_key(key, uint64_t(i0 + j)) < p;
        const float want = drop ? 0.f : x[size_t(j)] * kp;
        bad += out[size_t(j)] != want || acc[size_t(j)] != (drop ? 2.f : std::fmaf(x[size_t(j)], kp, 2.f));
      }
      report(std::string("dropout ") + isa_name(isa) + ": mask of p = " + std::to_string(p) + " (elements wrong)", double(bad), 0.5);
    }
  }
  set_isa(keep);
  check_gemm_bf16();
}

namespace {

// A bf16 product: operands drawn as bf16, the exact sums of their products in double, and the
// bound of an fp32 accumulation (as make_case) on the float-C result.
struct CaseH {
  bool ta, tb;
  int64_t M, N, K, lda, ldb, ldc;
  float alpha, beta;
  std::vector<bf16> A, B, C0h;
  std::vector<float> C0f;
  std::vector<double> sum, abs;  // sum_k opA opB and sum_k |opA opB| per element
};

CaseH make_case_h(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, float beta, std::mt19937_64& rng) {
  std::normal_distribution<float> d(0.f, 1.f);
  CaseH c{ta, tb, M, N, K, (ta ? M : K) + 3, (tb ? N : K) + 2, N + 5, alpha, beta, {}, {}, {}, {}, {}, {}};
  c.A.resize(size_t((ta ? K : M) * c.lda));
  c.B.resize(size_t((tb ? K : N) * c.ldb));
  c.C0f.resize(size_t(M * c.ldc));
  c.C0h.resize(size_t(M * c.ldc));
  for (auto& v : c.A) v = bf16(d(rng));
  for (auto& v : c.B) v = bf16(d(rng));
  for (size_t i = 0; i < c.C0f.size(); i++) {
    c.C0f[i] = beta == 0.f ? std::numeric_limits<float>::quiet_NaN() : d(rng);
    c.C0h[i] = bf16(c.C0f[i]);
  }
  c.sum.resize(size_t(M * N));
  c.abs.resize(size_t(M * N));
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      double s = 0, a = 0;
      for (int64_t k = 0; k < K; k++) {
        const double x = float(ta ? c.A[k * c.lda + m] : c.A[m * c.lda + k]);
        const double y = float(tb ? c.B[k * c.ldb + n] : c.B[n * c.ldb + k]);
        s += x * y, a += std::fabs(x * y);
      }
      c.sum[m * N + n] = s, c.abs[m * N + n] = a;
    }
  return c;
}

// Worst error over the bound (< 1 passes): float C within fp32 accumulation of the exact result;
// bf16 C within that plus one bf16 rounding (2^-8 relative); padding columns untouched.
template <typename CT>
double check_h(const CaseH& c, const std::vector<CT>& C, const std::vector<CT>& C0) {
  constexpr bool half = std::is_same<CT, bf16>::value;
  double worst = 0;
  for (int64_t m = 0; m < c.M; m++) {
    for (int64_t n = 0; n < c.N; n++) {
      const double old = c.beta == 0.f ? 0.0 : double(c.beta) * float(C0[m * c.ldc + n]);
      const double ref = double(c.alpha) * c.sum[m * c.N + n] + old;
      double bound = double(c.K + 2) * 6e-8 * (std::fabs(c.alpha) * c.abs[m * c.N + n] + std::fabs(old)) + 1e-30;
      if (half) bound += std::ldexp(std::fabs(ref) + bound, -8);
      const double e = std::fabs(double(float(C[m * c.ldc + n])) - ref) / bound;
      worst = std::isfinite(e) ? std::max(worst, e) : 1e30;
    }
    for (int64_t n = c.N; n < c.ldc; n++)
      if (std::memcmp(&C[m * c.ldc + n], &C0[m * c.ldc + n], sizeof(CT)) != 0) worst = 1e30;
  }
  return worst;
}

std::vector<float> run_h(const CaseH& c, const std::vector<float>& C0) {
  std::vector<float> C = C0;
  gemm_bf16(c.ta, c.tb, c.M, c.N, c.K, c.alpha, c.A.data(), c.lda, c.B.data(), c.ldb, c.beta, C.data(), c.ldc);
  return C;
}
std::vector<bf16> run_h(const CaseH& c, const std::vector<bf16>& C0) {
  std::vector<bf16> C = C0;
  gemm_bf16(c.ta, c.tb, c.M, c.N, c.K, c.alpha, c.A.data(), c.lda, c.B.data(), c.ldb, c.beta, C.data(), c.ldc);
  return C;
}

std::string name_h(const CaseH& c) {
  return std::to_string(c.M) + "x" + std::to_string(c.N) + "x" + std::to_string(c.K) + (c.ta ? " ta" : "") + (c.tb ? " tb" : "") +
         " beta " + std::to_string(c.beta);
}

}  // namespace

// CPUID detection (isa.cpp) agrees with the kernel's view of the CPU (/proc/cpuinfo's flags, Linux).
void check_cpu_features() {
  std::ifstream f("/proc/cpuinfo");
  std::string line, flags;
  while (std::getline(f, line))
    if (line.rfind("flags", 0) == 0) {
      flags = line + " ";
      break;
    }
  if (flags.empty() || !avx512bf16_kernels()) return;  // not Linux on x86, or a build without the kernels
  const auto has = [&](const char* n) { return flags.find(std::string(" ") + n + " ") != std::string::npos; };
  const bool bf = has("avx512_bf16") && has("avx512f") && has("avx512bw") && has("avx512vl");
  const bool amx = has("amx_bf16") && has("amx_tile");
  const bool ok = isa_available(Isa::Avx512Bf16) == bf && cpu_has_amx() == amx;
  if (!ok) failures++;
  std::printf("%s CPUID agrees with /proc/cpuinfo: avx512bf16 %s, AMX %s\n", ok ? "ok  " : "FAIL", bf ? "yes" : "no",
              amx ? "yes" : "no");
}

void check_gemm_bf16() {
  check_cpu_features();
  std::mt19937_64 rng(13);
  // Odd sizes in 1..70 in every dimension (M 1..4: the GEMV; N 16 / M 16: the skinny kernel), all
  // layouts, beta 0 (C NaN: must be ignored), 1 and another; then GEMV rows, LoRA's skinny shapes,
  // and a few large ones whose K spans several blocks.
  std::vector<CaseH> cases;
  const int64_t dims[] = {1, 3, 16, 33, 70};
  const float betas[] = {0.f, 1.f, -0.6f};
  int i = 0;
  for (int64_t M : dims)
    for (int64_t N : dims)
      for (int64_t K : dims)
        for (int t = 0; t < 4; t++, i++) cases.push_back(make_case_h(t & 1, t & 2, M, N, K, i % 3 ? 1.f : -0.7f, betas[i % 3], rng));
  for (int64_t M : {1, 2, 3, 4})
    for (int64_t N : {5, 64, 131}) cases.push_back(make_case_h(M % 2, false, M, N, 300, 1.f, betas[M % 3], rng));
  for (int64_t n : {8, 16}) {
    cases.push_back(make_case_h(false, false, 500, n, 384, 1.f, 0.f, rng));  // x A^T
    cases.push_back(make_case_h(false, true, 500, n, 96, 2.f, 1.f, rng));    // dy B
    cases.push_back(make_case_h(true, true, 384, n, 500, 1.f, 1.f, rng));    // dB^T
    cases.push_back(make_case_h(true, true, n, 384, 500, 1.f, -0.6f, rng));  // dA
    cases.push_back(make_case_h(true, false, n, 200, 300, 1.f, 0.f, rng));   // a narrow M of another layout
  }
  for (int t = 0; t < 4; t++) cases.push_back(make_case_h(t & 1, t & 2, 300, 200, 700, 0.5f, betas[t % 3], rng));
  cases.push_back(make_case_h(false, false, 257, 1000, 1025, 1.f, 1.f, rng));
  // bf16 C wider than its scratch (gemm_bf16.cpp: 8 Mi floats): blocks of rows and of columns.
  cases.push_back(make_case_h(false, false, 257, 8200, 3, 1.f, 1.f, rng));
  cases.push_back(make_case_h(true, true, 257, 8200, 5, -0.7f, 0.f, rng));
  const Isa keep = current_isa();
  for (Isa isa : isas()) {
    set_isa(isa);
    for (int half = 0; half < 2; half++) {
      double worst = 0;
      std::string where;
      for (const CaseH& c : cases) {
        const double e = half ? check_h(c, run_h(c, c.C0h), c.C0h) : check_h(c, run_h(c, c.C0f), c.C0f);
        if (e > worst) worst = e, where = name_h(c);
      }
      report(std::string("gemm_bf16 ") + isa_name(isa) + (half ? ", bf16 C" : ", fp32 C") + ": " + std::to_string(cases.size()) +
                 " shapes/layouts vs double (worst " + where + ")",
             worst, 1.0);
    }
    // Blocking that splits every dimension, with an odd kc (the k-pair panels pad each block's last pair).
    for (int64_t kc : {16, 15}) {
      set_gemm_blocking(kc, 2 * kernels().mr, 2 * kernels().nr);
      double worst = 0;
      for (const CaseH& c : cases)
        if (c.M >= 33 && c.N >= 33 && c.K >= 33 && c.K <= 700)
          worst = std::max({worst, check_h(c, run_h(c, c.C0f), c.C0f), check_h(c, run_h(c, c.C0h), c.C0h)});
      set_gemm_blocking(0, 0, 0);
      report(std::string("gemm_bf16 ") + isa_name(isa) + ": tiny blocking (kc " + std::to_string(kc) + ") vs double", worst, 1.0);
    }
    // bf16 C is rounded once, from the fp32 sum over all of K: 1 + 40 * 2^-12 is exact in fp32 and
    // rounds to 1 + 2^-7; rounding after each block of 16 (kc 16) would stay at 1.
    {
      const int64_t M = 30, N = 40, K = 41;
      std::vector<bf16> A(size_t(M * K), bf16(1.f)), B(size_t(N * K), bf16(std::ldexp(1.f, -12))), C(size_t(M * N), bf16(0.f));
      for (int64_t n = 0; n < N; n++) B[size_t(n * K)] = bf16(1.f);
      int64_t bad = 0;
      for (int64_t kc : {int64_t(0), int64_t(16)}) {
        set_gemm_blocking(kc, kc ? 2 * kernels().mr : 0, kc ? 2 * kernels().nr : 0);
        for (int64_t m : {int64_t(1), M}) {  // the GEMV and the blocked GEMM
          gemm_bf16(false, false, m, N, K, 1.f, A.data(), K, B.data(), K, 0.f, C.data(), N);
          for (int64_t j = 0; j < m * N; j++) bad += float(C[size_t(j)]) != 1.f + 0x1p-7f;
        }
      }
      set_gemm_blocking(0, 0, 0);
      report(std::string("gemm_bf16 ") + isa_name(isa) + ": bf16 C rounded once over K (elements wrong)", double(bad), 0.5);
    }
    // One thread or two: the same bits.
    {
      bool same = true;
      for (const CaseH& c : cases) {
        if (c.M * c.N * c.K < 100000) continue;
        sft::set_num_threads(1);
        const std::vector<float> one = run_h(c, c.C0f);
        sft::set_num_threads(2);
        same = same && std::memcmp(one.data(), run_h(c, c.C0f).data(), one.size() * 4) == 0;
      }
      sft::set_num_threads(0);
      if (!same) failures++;
      std::printf("%s gemm_bf16 %s: 1 and 2 threads give the same bits\n", same ? "ok  " : "FAIL", isa_name(isa));
    }
    // gemm_q4_bf16: NF4 W (two tensors, as a fused q/k) times bf16 activations, forward and dy W,
    // against double over the decoded weights; the GEMV rows (M <= 4) and the packed GEMM.
    {
      std::mt19937_64 qr(17);
      std::normal_distribution<float> d(0.f, 1.f);
      const int64_t N = 99, K = 160;
      std::vector<float> w(size_t(N * K));
      for (auto& v : w) v = d(qr);
      Nf4Weight W;
      W.rows = N, W.cols = K;
      W.segments.push_back({0, 64, nf4_quantize_tensor(w.data(), 64 * K, true)});
      W.segments.push_back({64, N - 64, nf4_quantize_tensor(w.data() + 64 * K, (N - 64) * K, true)});
      std::vector<float> wd(size_t(N * K));
      for (int64_t r = 0; r < N; r++) W.decode_row(wd.data() + r * K, r, 0, K);
      double worst = 0;
      for (int64_t M : {1, 3, 37})
        for (int tb = 0; tb < 2; tb++) {
          const int64_t n = tb ? K : N, k = tb ? N : K;  // dy W: [M, N] x [N, K]
          const float beta = M == 3 ? 0.f : 0.5f;
          std::vector<bf16> A(size_t(M * k)), C(size_t(M * n)), C0(size_t(M * n));
          for (auto& v : A) v = bf16(d(qr));
          for (auto& v : C0) v = bf16(beta == 0.f ? std::numeric_limits<float>::quiet_NaN() : d(qr));
          C = C0;
          gemm_q4_bf16(tb, M, n, k, 1.f, A.data(), k, W, beta, C.data(), n);
          for (int64_t m = 0; m < M; m++)
            for (int64_t j = 0; j < n; j++) {
              double s = 0, a = 0;
              for (int64_t kk = 0; kk < k; kk++) {
                const double x = float(A[size_t(m * k + kk)]), y = tb ? wd[size_t(kk * K + j)] : wd[size_t(j * K + kk)];
                s += x * y, a += std::fabs(x * y);
              }
              const double old = beta == 0.f ? 0.0 : double(beta) * float(C0[size_t(m * n + j)]);
              const double ref = s + old;
              double bound = double(k + 2) * 6e-8 * (a + std::fabs(old)) + 1e-30;
              bound += std::ldexp(std::fabs(ref) + bound, -8);
              const double e = std::fabs(double(float(C[size_t(m * n + j)])) - ref) / bound;
              worst = std::isfinite(e) ? std::max(worst, e) : 1e30;
            }
        }
      report(std::string("gemm_q4_bf16 ") + isa_name(isa) + ": x W^T and dy W (M 1, 3, 37) vs double", worst, 1.0);
    }
  }
  set_isa(keep);
}
