// The fp32 GEMM and GEMV on every instruction set this machine runs (cpu/isa.h), against a
// double-precision product: awkward shapes (1, 7, 17, 65, 300 in each of M, N, K), all four
// transposed layouts, padded strides, alpha and beta (beta = 0 must ignore C, NaN included), tiny
// blocking that splits every dimension, prepacked B equal to packing per call bit for bit, results
// that do not depend on the thread count, and bf16 / f16 weights in the GEMV.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "core/random.h"
#include "core/threads.h"
#include "cpu/gemm.h"
#include "cpu/isa.h"

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
  for (Isa i : {Isa::Portable, Isa::Avx2, Isa::Avx512})
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
}
