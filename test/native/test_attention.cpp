// The tiled attention (cpu/attention.cpp) against the definition written as plain loops in double
// precision (called from test_grad.cpp's main): forward output, the saved logsumexp and all three
// gradients, at sizes that are not multiples of the blocks (T = 1, 7, 65, 130), with a KV-cache
// offset (Tq < Tk, p0 > 0), grouped-query heads 4:1, ALiBi on Bloom's interleaved rows and on
// separate cache rows, head dims 64 and small ones; fp32 against the same reference; and the same
// bits whatever the thread count; the fp32 exponential it uses against std::exp.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "core/threads.h"
#include "cpu/isa.h"
#include "cpu/ops.h"
#include "cpu/simd.h"

namespace {

// One problem: q rows of stride ldq (head h at h*qhs), k/v rows of stride ldkv (kv head g at g*kvhs).
// fused = Bloom's rows: k and v live in q's buffer at +hd and +2hd (so do their gradients).
struct Case {
  std::string name;
  int64_t B, Tq, Tk, p0;
  int nh, nkv, hd;
  bool alibi, fused;
};

struct Problem {
  int64_t ldq, qhs, ldkv, kvhs, koff, voff;
  Vec q, kv;  // kv: k and v of the unfused form side by side in one buffer (k at 0, v at voff); fused: unused
  Vec dout, slopes;
};

// softmax_{j <= p0+i}(q_i . k_j / sqrt(hd) + slope_h * j) v_j, its logsumexp, and its gradients
// added into dq/dk/dv (in the inputs' layouts), one row at a time from the materialised row.
void reference(const Case& c, const Problem& P, const double* q, const double* k, const double* v, Vec& out, Vec& lse,
               double* dq, double* dk, double* dv) {
  const double scale = 1.0 / std::sqrt(double(c.hd));
  const int group = c.nh / c.nkv;
  const int64_t ldo = int64_t(c.nh) * c.hd;
  for (int64_t b = 0; b < c.B; b++)
    for (int h = 0; h < c.nh; h++)
      for (int64_t i = 0; i < c.Tq; i++) {
        const int g = h / group;
        const double* qi = q + (b * c.Tq + i) * P.ldq + h * P.qhs;
        const double* dy = &P.dout[(b * c.Tq + i) * ldo + h * c.hd];
        const int64_t n = c.p0 + i + 1;
        Vec s(n), dp(n);
        double mx = -INFINITY;
        for (int64_t j = 0; j < n; j++) {
          const double* kj = k + (b * c.Tk + j) * P.ldkv + g * P.kvhs;
          double d = 0;
          for (int e = 0; e < c.hd; e++) d += qi[e] * kj[e];
          s[j] = d * scale + (c.alibi ? P.slopes[h] * double(j) : 0.0);
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < n; j++) sum += std::exp(s[j] - mx);
        lse[(b * c.nh + h) * c.Tq + i] = mx + std::log(sum);
        double* o = &out[(b * c.Tq + i) * ldo + h * c.hd];
        double dsum = 0;
        for (int64_t j = 0; j < n; j++) {
          const double p = std::exp(s[j] - mx) / sum;
          const double* vj = v + (b * c.Tk + j) * P.ldkv + g * P.kvhs;
          double d = 0;
          for (int e = 0; e < c.hd; e++) o[e] += p * vj[e], d += dy[e] * vj[e];
          dp[j] = d;
          dsum += p * d;
          s[j] = p;
        }
        for (int64_t j = 0; j < n; j++) {
          const double p = s[j], ds = p * (dp[j] - dsum) * scale;
          const int64_t kr = (b * c.Tk + j) * P.ldkv + g * P.kvhs;
          for (int e = 0; e < c.hd; e++) {
            dq[(b * c.Tq + i) * P.ldq + h * P.qhs + e] += ds * k[kr + e];
            dk[kr + e] += ds * qi[e];
            dv[kr + e] += p * dy[e];
          }
        }
      }
}

Problem make(const Case& c, std::mt19937_64& rng) {
  Problem P;
  const int64_t H = int64_t(c.nh) * c.hd;
  if (c.fused) {  // Bloom: [q k v] per head, heads interleaved (Tq == Tk, p0 == 0)
    P.ldq = P.ldkv = 3 * H, P.qhs = P.kvhs = 3 * c.hd, P.koff = c.hd, P.voff = 2 * c.hd;
    P.q = randn(size_t(c.B * c.Tq * P.ldq), rng);
  } else {  // padded strides, like the fused qkv rows of Llama's projections
    P.ldq = H + 3, P.qhs = c.hd, P.ldkv = 2 * int64_t(c.nkv) * c.hd + 5, P.kvhs = c.hd;
    P.koff = 0, P.voff = int64_t(c.nkv) * c.hd;
    P.q = randn(size_t(c.B * c.Tq * P.ldq), rng);
    P.kv = randn(size_t(c.B * c.Tk * P.ldkv), rng);
  }
  P.dout = randn(size_t(c.B * c.Tq * H), rng);
  P.slopes.assign(size_t(c.nh), 0.0);
  if (c.alibi) sft::cpu::alibi_slopes<double>(P.slopes.data(), c.nh);
  return P;
}

// Runs the kernel in T on the problem's values: out, lse and the gradients added to (start) values.
template <typename T>
struct Run {
  std::vector<T> out, lse, dq, dkv;  // dq: q's buffer shape (fused: dq, dk, dv all in it)
};

template <typename T>
Run<T> run(const Case& c, const Problem& P, const Vec& dq0, const Vec& dkv0) {
  auto cast = [](const Vec& v) { return std::vector<T>(v.begin(), v.end()); };
  const std::vector<T> q = cast(P.q), kv = cast(P.kv), dout = cast(P.dout), slopes = cast(P.slopes);
  Run<T> r;
  r.out.assign(size_t(c.B * c.Tq * c.nh * c.hd), T(0));
  r.lse.assign(size_t(c.B * c.nh * c.Tq), T(0));
  r.dq = cast(dq0), r.dkv = cast(dkv0);
  const T* k = c.fused ? q.data() + P.koff : kv.data() + P.koff;
  const T* v = c.fused ? q.data() + P.voff : kv.data() + P.voff;
  T* dk = c.fused ? r.dq.data() + P.koff : r.dkv.data() + P.koff;
  T* dv = c.fused ? r.dq.data() + P.voff : r.dkv.data() + P.voff;
  if (c.alibi) {
    sft::cpu::alibi_attention_forward<T>(r.out.data(), r.lse.data(), q.data(), P.ldq, P.qhs, k, v, P.ldkv, P.kvhs,
                                         slopes.data(), c.B, c.Tq, c.Tk, c.p0, c.nh, c.hd);
    sft::cpu::alibi_attention_backward<T>(r.dq.data(), dk, dv, dout.data(), r.out.data(), r.lse.data(), q.data(), P.ldq,
                                          P.qhs, k, v, P.ldkv, P.kvhs, slopes.data(), c.B, c.Tq, c.Tk, c.p0, c.nh, c.hd);
  } else {
    sft::cpu::attention_forward<T>(r.out.data(), r.lse.data(), q.data(), P.ldq, k, v, P.ldkv, c.B, c.Tq, c.Tk, c.p0,
                                   c.nh, c.nkv, c.hd);
    sft::cpu::attention_backward<T>(r.dq.data(), dk, dv, dout.data(), r.out.data(), r.lse.data(), q.data(), P.ldq, k, v,
                                    P.ldkv, c.B, c.Tq, c.Tk, c.p0, c.nh, c.nkv, c.hd);
  }
  return r;
}

template <typename T>
Vec f64(const std::vector<T>& v) {
  return Vec(v.begin(), v.end());
}

// Elements of a gradient buffer that belong to one of q / k / v (the rest is padding or other columns).
Vec part(const Case& c, const Problem& P, const Vec& buf, bool of_q, int64_t off) {
  Vec out;
  const int64_t rows = of_q ? c.B * c.Tq : c.B * c.Tk, ld = of_q ? P.ldq : P.ldkv, hs = of_q ? P.qhs : P.kvhs;
  const int heads = of_q ? c.nh : c.nkv;
  for (int64_t r = 0; r < rows; r++)
    for (int h = 0; h < heads; h++)
      for (int e = 0; e < c.hd; e++) out.push_back(buf[size_t(r * ld + h * hs + off + e)]);
  return out;
}

void check_case(const Case& c, std::mt19937_64& rng, const std::string& isa) {
  const Problem P = make(c, rng);
  const Vec dq0 = randn(P.q.size(), rng, 0.1), dkv0 = randn(P.kv.size(), rng, 0.1);
  // The reference, in the same buffers' layouts (the gradients added to the same start values).
  Vec out(size_t(c.B * c.Tq * c.nh * c.hd), 0.0), lse(size_t(c.B * c.nh * c.Tq)), dq = dq0, dkv = dkv0;
  const double* k = c.fused ? P.q.data() + P.koff : P.kv.data() + P.koff;
  const double* v = c.fused ? P.q.data() + P.voff : P.kv.data() + P.voff;
  double* dk = c.fused ? dq.data() + P.koff : dkv.data() + P.koff;
  double* dv = c.fused ? dq.data() + P.voff : dkv.data() + P.voff;
  reference(c, P, P.q.data(), k, v, out, lse, dq.data(), dk, dv);

  const Vec& dkv_buf = c.fused ? dq : dkv;
  const auto d = run<double>(c, P, dq0, dkv0);
  const auto f = run<float>(c, P, dq0, dkv0);
  const Vec dqd = f64(d.dq), dkvd = c.fused ? dqd : f64(d.dkv), dqf = f64(f.dq), dkvf = c.fused ? dqf : f64(f.dkv);
  const std::string n = "attention tiled = reference (" + isa + "): " + c.name;
  report(n + ": out", rel_err(f64(d.out), out), 1e-12);
  report(n + ": lse", rel_err(f64(d.lse), lse), 1e-12);
  report(n + ": dq (+=)", rel_err(part(c, P, dqd, true, 0), part(c, P, dq, true, 0)), 1e-12);
  report(n + ": dk (+=)", rel_err(part(c, P, dkvd, false, P.koff), part(c, P, dkv_buf, false, P.koff)), 1e-12);
  report(n + ": dv (+=)", rel_err(part(c, P, dkvd, false, P.voff), part(c, P, dkv_buf, false, P.voff)), 1e-12);
  // fp32: float rounding of the same computation (scores, exponentials and sums over <= 150 keys).
  const double ftol = 2e-5;
  report(n + ": fp32 out", rel_err(f64(f.out), out), ftol);
  report(n + ": fp32 lse", rel_err(f64(f.lse), lse), ftol);
  report(n + ": fp32 dq", rel_err(part(c, P, dqf, true, 0), part(c, P, dq, true, 0)), ftol);
  report(n + ": fp32 dk", rel_err(part(c, P, dkvf, false, P.koff), part(c, P, dkv_buf, false, P.koff)), ftol);
  report(n + ": fp32 dv", rel_err(part(c, P, dkvf, false, P.voff), part(c, P, dkv_buf, false, P.voff)), ftol);
}

// Work is split by (batch, head, query block) forward and (batch, kv head) backward; each result
// is summed by one thread in a fixed block order, so 1 and 3 threads give the same bits.
void check_thread_count(std::mt19937_64& rng) {
  const Case c{"GQA 4:2, B 3, T 130", 3, 130, 130, 0, 4, 2, 64, false, false};
  const Problem P = make(c, rng);
  const Vec dq0 = randn(P.q.size(), rng, 0.1), dkv0 = randn(P.kv.size(), rng, 0.1);
  const int keep = sft::num_threads();
  sft::set_num_threads(1);
  const auto one = run<float>(c, P, dq0, dkv0);
  sft::set_num_threads(3);
  const auto three = run<float>(c, P, dq0, dkv0);
  sft::set_num_threads(keep);
  auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
  };
  const bool ok = same(one.out, three.out) && same(one.lse, three.lse) && same(one.dq, three.dq) && same(one.dkv, three.dkv);
  report("attention fp32 " + c.name + ": 1 and 3 threads give the same bits", ok ? 0.0 : 1.0, 0.5);
}

// The fp32 exponential the kernel uses: every 1/64 from -87 to 10 against std::exp in double, and
// the edges softmax meets (-inf gives 0, NaN stays NaN, overflow gives +inf).
void check_vexp() {
  constexpr int W = sft::cpu::kVecBytes / sizeof(float);
  double worst = 0;
  for (int i = -87 * 64; i <= 10 * 64; i += W) {
    float x[W], y[W];
    for (int t = 0; t < W; t++) x[t] = float(i + t) / 64.0f;
    sft::cpu::vstore(y, sft::cpu::vexp(sft::cpu::vload(x)));
    for (int t = 0; t < W; t++) worst = std::max(worst, std::abs(double(y[t]) / std::exp(double(x[t])) - 1));
  }
  report("vexp (fp32) within 4 ulp of exp on [-87, 10]", worst, 4 * 1.2e-7);
  float x[W], y[W];
  for (int t = 0; t < W; t++) x[t] = 0.0f;
  x[0] = -INFINITY, x[1] = NAN, x[2] = 100.0f, x[3] = -100.0f;
  sft::cpu::vstore(y, sft::cpu::vexp(sft::cpu::vload(x)));
  const bool edges = y[0] == 0.0f && std::isnan(y[1]) && std::isinf(y[2]) && y[2] > 0 && y[3] == 0.0f;
  report("vexp (fp32): exp(-inf) = 0, NaN stays NaN, exp(100) = +inf, exp(-100) = 0", edges ? 0.0 : 1.0, 0.5);
}

}  // namespace

void check_attention() {
  check_vexp();
  std::mt19937_64 rng(2024);
  const std::vector<Case> cases = {
      {"GQA 4:1, T 1, hd 8", 2, 1, 1, 0, 4, 1, 8, false, false},
      {"GQA 4:1, T 7, hd 3", 2, 7, 7, 0, 4, 1, 3, false, false},
      {"GQA 4:1, T 65, hd 64", 1, 65, 65, 0, 4, 1, 64, false, false},
      {"GQA 4:1, T 130, hd 16", 2, 130, 130, 0, 4, 1, 16, false, false},
      {"heads 2:2, T 130, hd 128", 1, 130, 130, 0, 2, 2, 128, false, false},
      {"KV cache: Tq 20 after p0 130 (Tk 150), GQA 4:2, hd 64", 2, 20, 150, 130, 4, 2, 64, false, false},
      {"KV cache: decode 1 after p0 129 (Tk 130), GQA 4:1, hd 64", 1, 1, 130, 129, 4, 1, 64, false, false},
      {"KV cache: Tq 70 after p0 3 (Tk 80, a stale tail), hd 16", 1, 70, 80, 3, 2, 1, 16, false, false},
      {"ALiBi, Bloom's fused rows, 6 heads, T 130, hd 16", 2, 130, 130, 0, 6, 6, 16, true, true},
      {"ALiBi, Bloom's fused rows, 3 heads, T 7, hd 5", 1, 7, 7, 0, 3, 3, 5, true, true},
      {"ALiBi, cache rows: Tq 9 after p0 65 (Tk 74), 6 heads, hd 64", 2, 9, 74, 65, 6, 6, 64, true, false},
  };
  // The fp32 block products run the kernels of the instruction set in use (kernels.h attn_mm): every
  // one this machine has, each against the double reference.
  const sft::cpu::Isa keep = sft::cpu::current_isa();
  for (sft::cpu::Isa isa : sft::cpu::kAllIsas) {
    if (!sft::cpu::isa_available(isa)) continue;
    sft::cpu::set_isa(isa);
    for (const auto& c : cases) check_case(c, rng, sft::cpu::isa_name(isa));
  }
  sft::cpu::set_isa(keep);
  check_thread_count(rng);
}
