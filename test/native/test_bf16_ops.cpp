// Every op of the bf16 CPU backend (T = bf16 storage, fp32 math) against the fp32 op on the same
// bf16-rounded inputs. Where the bf16 op runs the fp32 computation on the widened values and
// rounds its output once (everything but the GEMMs and GQA's dk/dv, which add one rounding per
// query head), each output element is the fp32 result rounded to nearest: within 2^-8 of it
// relatively (bf16's unit roundoff; checked element by element: a truncation, a double rounding or an intermediate kept
// in bf16 breaks it). Everywhere, the output is within 2^-8 norm-wise; statistics and weight
// gradients (fp32 in the bf16 backend) equal the fp32 op's. The rounding itself is checked
// against a definition in double (nearest of the two neighbours, ties to the even one).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "cpu/backend.h"
#include "cpu/bf16.h"
#include "cpu/mixed.h"
#include "cpu/ops.h"

using sft::cpu::bf16;

namespace {

constexpr double kUlp = 1.0 / 256;  // 2^-8: round to nearest's relative bound (unit roundoff) for bf16's 8-bit significand
constexpr double kNorm = 1.0 / 256;  // 2^-8: norm-wise, outputs with more than one rounding

std::vector<bf16> to_bf16(const Vec& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); i++) out[i] = bf16(float(v[i]));
  return out;
}
std::vector<float> widen(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); i++) out[i] = float(v[i]);
  return out;
}
template <typename E>
Vec as_vec(const std::vector<E>& v) {
  Vec out(v.size());
  for (size_t i = 0; i < v.size(); i++) out[i] = double(float(v[i]));
  return out;
}

// A bf16 input and its exact fp32 image.
struct Pair {
  std::vector<bf16> b;
  std::vector<float> f;
};
Pair input(size_t n, std::mt19937_64& rng, double scale = 1.0, double shift = 0.0) {
  Vec v = randn(n, rng, scale);
  for (auto& x : v) x += shift;
  Pair p{to_bf16(v), {}};
  p.f = widen(p.b);
  return p;
}
Pair zeros(size_t n) { return {std::vector<bf16>(n, bf16(0.0f)), std::vector<float>(n, 0.0f)}; }

// got (bf16) is want (fp32) rounded once: elementwise within 2^-8 (0 stays 0).
void rounded_once(const std::string& name, const std::vector<bf16>& got, const std::vector<float>& want) {
  double worst = got.size() == want.size() ? 0 : INFINITY;
  for (size_t i = 0; i < want.size() && i < got.size(); i++) {
    const double g = float(got[i]), w = want[i];
    const double e = w == 0 ? (g == 0 ? 0 : INFINITY) : std::fabs(g - w) / std::fabs(w);
    worst = std::max(worst, std::isnan(e) ? INFINITY : e);
  }
  report("bf16 " + name + ": each element the fp32 result rounded once (/2^-8)", worst / kUlp, 1.0 + 1e-6);
}
void close_norm(const std::string& name, const Vec& got, const Vec& want, double tol = kNorm) {
  report("bf16 " + name + ": norm-wise vs fp32", rel_err(got, want), tol);
}
void same_f32(const std::string& name, const std::vector<float>& got, const std::vector<float>& want, double tol = 1e-6) {
  report("bf16 " + name + ": fp32 output equals the fp32 op's", rel_err(as_vec(got), as_vec(want)), tol);
}

// bf16(x) against its definition: the nearer of the two bf16 neighbours of x, the even one on a tie.
void check_rounding(std::mt19937_64& rng) {
  std::vector<float> xs = {0.0f, -0.0f, 1.0f, 1.00390625f /* tie: 1 + 2^-8, down to 1 */, 1.01171875f /* tie, up */,
                           3.3895314e38f /* the largest bf16 */, 3.4e38f /* past the last midpoint: inf */, std::numeric_limits<float>::denorm_min(), -2.5e-39f,
                           INFINITY, -INFINITY, 65504.f, 1e-20f};
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 20000; i++) {
    uint32_t u = bits(rng);
    float f;
    std::memcpy(&f, &u, 4);
    if (std::isfinite(f)) xs.push_back(f);
  }
  int bad = 0;
  for (float x : xs) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    const uint32_t lo_bits = u & 0xffff0000u, hi_bits = lo_bits + 0x10000u;  // neighbours toward 0 and away
    float lo, hi;
    std::memcpy(&lo, &lo_bits, 4);
    std::memcpy(&hi, &hi_bits, 4);
    const double dl = std::fabs(double(x) - double(lo)), dh = std::isinf(hi) && !std::isinf(x) ? std::fabs(double(x) - 3.402823669209385e38 * (x < 0 ? -1 : 1)) : std::fabs(double(x) - double(hi));
    const uint32_t want = (u & 0x7fffffffu) >= 0x7f800000u ? lo_bits : dl < dh ? lo_bits : dh < dl ? hi_bits : (lo_bits & 0x10000u) ? hi_bits : lo_bits;
    const bf16 got(x);
    if ((uint32_t(got.bits) << 16) != want) bad++;
  }
  // The bulk conversion (AVX512-BF16's instruction where the CPU has it) is the same rounding, bit
  // for bit, subnormals included (the instruction flushes them; their blocks go the portable way).
  for (int i = 0; i < 3000; i++) {
    float f = std::ldexp(float(i + 1), -149 + (i % 40));  // subnormals and small normals, both signs
    xs.push_back(i % 2 ? -f : f);
  }
  xs.push_back(std::numeric_limits<float>::quiet_NaN());
  std::vector<bf16> bulk(xs.size());
  sft::cpu::narrow(bulk.data(), xs.data(), int64_t(xs.size()));
  int differ = 0;
  for (size_t i = 0; i < xs.size(); i++) differ += bulk[i].bits != bf16(xs[i]).bits;
  report("bf16 narrow (bulk, this CPU's path) equals bf16(x) bit for bit, subnormals and NaN included", double(differ), 0.5);
  const bf16 nan(std::numeric_limits<float>::quiet_NaN());
  report("bf16 rounding: nearest, ties to even, overflow to inf, " + std::to_string(xs.size()) + " values", double(bad), 0.5);
  report("bf16 rounding: NaN stays NaN", std::isnan(float(nan)) ? 0.0 : 1.0, 0.5);
}

void check_linear(std::mt19937_64& rng) {
  const int64_t M = 37, K = 70, N = 29;
  Pair x = input(M * K, rng), W = input(N * K, rng, 0.1), b = input(N, rng), y = input(M * N, rng), dy = input(M * N, rng);
  sft::cpu::linear_forward<bf16>(y.b.data(), x.b.data(), W.b.data(), b.b.data(), M, K, N, true);
  sft::cpu::linear_forward<float>(y.f.data(), x.f.data(), W.f.data(), b.f.data(), M, K, N, true);
  close_norm("linear forward (accumulate, bias)", as_vec(y.b), as_vec(y.f));
  Pair dx = input(M * K, rng);
  std::vector<float> dWb(size_t(N * K), 0.5f), dWf = dWb, dbb(size_t(N), 0.25f), dbf = dbb;
  sft::cpu::linear_backward<bf16>(dx.b.data(), dWb.data(), dbb.data(), dy.b.data(), x.b.data(), W.b.data(), M, K, N);
  sft::cpu::linear_backward<float>(dx.f.data(), dWf.data(), dbf.data(), dy.f.data(), x.f.data(), W.f.data(), M, K, N);
  close_norm("linear backward d input", as_vec(dx.b), as_vec(dx.f));
  same_f32("linear backward d weight (fp32, accumulated)", dWb, dWf, 1e-5);  // the bf16 GEMM may sum in its own order
  same_f32("linear backward d bias (fp32)", dbb, dbf);
  Pair z = input(M * N, rng);
  sft::cpu::add_bias<bf16>(z.b.data(), b.b.data(), M, N);
  sft::cpu::add_bias<float>(z.f.data(), b.f.data(), M, N);
  rounded_once("add_bias", z.b, z.f);
}

void check_norms(std::mt19937_64& rng) {
  const int64_t N = 13, C = 96;
  Pair x = input(N * C, rng, 2.0, 0.5), w = input(C, rng, 0.1, 1.0), bias = input(C, rng, 0.1), dy = input(N * C, rng);
  {
    Pair y = zeros(N * C), dx = input(N * C, rng);
    std::vector<float> rb(N), rf(N), dwb(C, 0.1f), dwf = dwb;
    sft::cpu::rmsnorm_forward<bf16>(y.b.data(), rb.data(), x.b.data(), w.b.data(), N, C, 1e-5);
    sft::cpu::rmsnorm_forward<float>(y.f.data(), rf.data(), x.f.data(), w.f.data(), N, C, 1e-5);
    rounded_once("rmsnorm forward", y.b, y.f);
    same_f32("rmsnorm rstd", rb, rf, 1e-7);
    sft::cpu::rmsnorm_backward<bf16>(dx.b.data(), dwb.data(), dy.b.data(), x.b.data(), w.b.data(), rb.data(), N, C);
    sft::cpu::rmsnorm_backward<float>(dx.f.data(), dwf.data(), dy.f.data(), x.f.data(), w.f.data(), rf.data(), N, C);
    rounded_once("rmsnorm backward d input (accumulated)", dx.b, dx.f);
    same_f32("rmsnorm backward d weight", dwb, dwf, 1e-7);
  }
  {
    Pair y = zeros(N * C), dx = input(N * C, rng);
    std::vector<float> mb(N), mf(N), rb(N), rf(N), dwb(C, 0.f), dwf = dwb, dbb(C, 0.f), dbf = dbb;
    sft::cpu::layernorm_forward<bf16>(y.b.data(), mb.data(), rb.data(), x.b.data(), w.b.data(), bias.b.data(), N, C, 1e-5);
    sft::cpu::layernorm_forward<float>(y.f.data(), mf.data(), rf.data(), x.f.data(), w.f.data(), bias.f.data(), N, C, 1e-5);
    rounded_once("layernorm forward", y.b, y.f);
    same_f32("layernorm mean and rstd", rb, rf, 1e-7);
    same_f32("layernorm mean", mb, mf, 1e-7);
    sft::cpu::layernorm_backward<bf16>(dx.b.data(), dwb.data(), dbb.data(), dy.b.data(), x.b.data(), w.b.data(), mb.data(), rb.data(), N, C);
    sft::cpu::layernorm_backward<float>(dx.f.data(), dwf.data(), dbf.data(), dy.f.data(), x.f.data(), w.f.data(), mf.data(), rf.data(), N, C);
    rounded_once("layernorm backward d input (accumulated)", dx.b, dx.f);
    same_f32("layernorm backward d weight", dwb, dwf, 1e-7);
    same_f32("layernorm backward d bias", dbb, dbf, 1e-7);
  }
  {  // NormHead: rows of a bf16 weight normalised; the gradients are fp32 on both sides
    Pair y = zeros(N * C);
    sft::cpu::l2norm_rows_forward<bf16>(y.b.data(), x.b.data(), N, C, 1e-12);
    sft::cpu::l2norm_rows_forward<float>(y.f.data(), x.f.data(), N, C, 1e-12);
    rounded_once("l2norm rows forward", y.b, y.f);
    std::vector<float> g = widen(dy.b), db(size_t(N * C), 0.f), df = db;
    sft::cpu::l2norm_rows_backward<bf16>(db.data(), g.data(), x.b.data(), N, C, 1e-12);
    sft::cpu::l2norm_rows_backward<float>(df.data(), g.data(), x.f.data(), N, C, 1e-12);
    same_f32("l2norm rows backward", db, df, 1e-7);
  }
}

void check_rope(std::mt19937_64& rng) {
  const int64_t B = 2, T = 9, ld = 80;
  const int heads = 3, hd = 16, half = hd / 2;
  std::vector<float> cs(size_t(32 * half)), sn(cs.size());
  for (int64_t p = 0; p < 32; p++)
    for (int i = 0; i < half; i++) {
      const double ang = double(p) / std::pow(10000.0, 2.0 * i / hd);
      cs[size_t(p * half + i)] = float(std::cos(ang)), sn[size_t(p * half + i)] = float(std::sin(ang));
    }
  Pair x = input(B * T * ld, rng);
  sft::cpu::rope_forward<bf16>(x.b.data(), ld, B * T, T, 3, heads, hd, cs.data(), sn.data());
  sft::cpu::rope_forward<float>(x.f.data(), ld, B * T, T, 3, heads, hd, cs.data(), sn.data());
  rounded_once("rope forward (positions from 3, strided rows)", x.b, x.f);
  Pair d = input(B * T * ld, rng);
  sft::cpu::rope_backward<bf16>(d.b.data(), ld, B * T, T, 0, heads, hd, cs.data(), sn.data());
  sft::cpu::rope_backward<float>(d.f.data(), ld, B * T, T, 0, heads, hd, cs.data(), sn.data());
  rounded_once("rope backward", d.b, d.f);
}

// Causal GQA attention (blocks of 64: T = 70 spans two) and decoding's few-rows path.
void check_attention(std::mt19937_64& rng) {
  {
    const int64_t B = 2, T = 70;
    const int nh = 4, nkv = 2, hd = 16;
    const int64_t Q = (nh + 2 * nkv) * hd, qdim = nh * hd, kvd = nkv * hd;
    Pair qkv = input(B * T * Q, rng, 1.5), out = zeros(B * T * qdim), dout = input(B * T * qdim, rng);
    std::vector<float> lb(size_t(B * nh * T)), lf(lb.size());
    sft::cpu::attention_forward<bf16>(out.b.data(), lb.data(), qkv.b.data(), Q, qkv.b.data() + qdim, qkv.b.data() + qdim + kvd, Q, B, T, T, 0, nh, nkv, hd);
    sft::cpu::attention_forward<float>(out.f.data(), lf.data(), qkv.f.data(), Q, qkv.f.data() + qdim, qkv.f.data() + qdim + kvd, Q, B, T, T, 0, nh, nkv, hd);
    rounded_once("attention forward (GQA 4/2, 70 tokens)", out.b, out.f);
    same_f32("attention logsumexp", lb, lf, 1e-7);
    // The backward from the forward's own output (as in training), the same rounded values on both sides.
    const std::vector<bf16> yb = out.b;
    const std::vector<float> yf = widen(yb);
    Pair d = zeros(B * T * Q);
    sft::cpu::attention_backward<bf16>(d.b.data(), d.b.data() + qdim, d.b.data() + qdim + kvd, dout.b.data(), yb.data(), lb.data(), qkv.b.data(), Q,
                                       qkv.b.data() + qdim, qkv.b.data() + qdim + kvd, Q, B, T, T, 0, nh, nkv, hd);
    sft::cpu::attention_backward<float>(d.f.data(), d.f.data() + qdim, d.f.data() + qdim + kvd, dout.f.data(), yf.data(), lb.data(), qkv.f.data(), Q,
                                        qkv.f.data() + qdim, qkv.f.data() + qdim + kvd, Q, B, T, T, 0, nh, nkv, hd);
    std::vector<bf16> dqb, dkvb;
    std::vector<float> dqf, dkvf;
    for (int64_t r = 0; r < B * T; r++) {
      dqb.insert(dqb.end(), d.b.begin() + r * Q, d.b.begin() + r * Q + qdim);
      dqf.insert(dqf.end(), d.f.begin() + r * Q, d.f.begin() + r * Q + qdim);
      dkvb.insert(dkvb.end(), d.b.begin() + r * Q + qdim, d.b.begin() + (r + 1) * Q);
      dkvf.insert(dkvf.end(), d.f.begin() + r * Q + qdim, d.f.begin() + (r + 1) * Q);
    }
    rounded_once("attention backward d q", dqb, dqf);
    close_norm("attention backward d k, d v (one rounding per query head of the group)", as_vec(dkvb), as_vec(dkvf));
  }
  {  // decoding: 3 new queries at positions 17.. over a cache of 20 keys (the few-rows path)
    const int64_t Tq = 3, Tk = 20, p0 = 17;
    const int nh = 4, nkv = 2, hd = 16;
    Pair q = input(Tq * nh * hd, rng), k = input(Tk * nkv * hd, rng), v = input(Tk * nkv * hd, rng), out = zeros(Tq * nh * hd);
    sft::cpu::attention_forward<bf16>(out.b.data(), nullptr, q.b.data(), nh * hd, k.b.data(), v.b.data(), nkv * hd, 1, Tq, Tk, p0, nh, nkv, hd);
    sft::cpu::attention_forward<float>(out.f.data(), nullptr, q.f.data(), nh * hd, k.f.data(), v.f.data(), nkv * hd, 1, Tq, Tk, p0, nh, nkv, hd);
    rounded_once("attention forward, decoding 3 tokens over a 20-token cache", out.b, out.f);
  }
  {  // ALiBi on Bloom's interleaved rows: per head [q | k | v]
    const int64_t B = 2, T = 67;
    const int nh = 3, hd = 16;
    const int64_t ld = 3 * nh * hd, hs = 3 * hd;
    std::vector<float> slopes(nh);
    sft::cpu::alibi_slopes<float>(slopes.data(), nh);
    Pair qkv = input(B * T * ld, rng, 1.5), out = zeros(B * T * nh * hd), dout = input(B * T * nh * hd, rng);
    std::vector<float> lb(size_t(B * nh * T)), lf(lb.size());
    sft::cpu::alibi_attention_forward<bf16>(out.b.data(), lb.data(), qkv.b.data(), ld, hs, qkv.b.data() + hd, qkv.b.data() + 2 * hd, ld, hs, slopes.data(), B, T, T, 0, nh, hd);
    sft::cpu::alibi_attention_forward<float>(out.f.data(), lf.data(), qkv.f.data(), ld, hs, qkv.f.data() + hd, qkv.f.data() + 2 * hd, ld, hs, slopes.data(), B, T, T, 0, nh, hd);
    rounded_once("alibi attention forward", out.b, out.f);
    same_f32("alibi attention logsumexp", lb, lf, 1e-7);
    const std::vector<bf16> yb = out.b;
    const std::vector<float> yf = widen(yb);
    Pair d = zeros(B * T * ld);
    sft::cpu::alibi_attention_backward<bf16>(d.b.data(), d.b.data() + hd, d.b.data() + 2 * hd, dout.b.data(), yb.data(), lb.data(), qkv.b.data(), ld, hs,
                                             qkv.b.data() + hd, qkv.b.data() + 2 * hd, ld, hs, slopes.data(), B, T, T, 0, nh, hd);
    sft::cpu::alibi_attention_backward<float>(d.f.data(), d.f.data() + hd, d.f.data() + 2 * hd, dout.f.data(), yf.data(), lb.data(), qkv.f.data(), ld, hs,
                                              qkv.f.data() + hd, qkv.f.data() + 2 * hd, ld, hs, slopes.data(), B, T, T, 0, nh, hd);
    rounded_once("alibi attention backward d q, d k, d v", d.b, d.f);
  }
}

void check_elementwise(std::mt19937_64& rng) {
  const int64_t n = 40000;  // several threads' chunks
  Pair g = input(n, rng, 3.0), u = input(n, rng), dy = input(n, rng);
  {
    Pair out = zeros(n), dg = input(n, rng), du = input(n, rng);
    sft::cpu::swiglu_forward<bf16>(out.b.data(), g.b.data(), u.b.data(), n);
    sft::cpu::swiglu_forward<float>(out.f.data(), g.f.data(), u.f.data(), n);
    rounded_once("swiglu forward", out.b, out.f);
    sft::cpu::swiglu_backward<bf16>(dg.b.data(), du.b.data(), dy.b.data(), g.b.data(), u.b.data(), n);
    sft::cpu::swiglu_backward<float>(dg.f.data(), du.f.data(), dy.f.data(), g.f.data(), u.f.data(), n);
    rounded_once("swiglu backward d gate (accumulated)", dg.b, dg.f);
    rounded_once("swiglu backward d up (accumulated)", du.b, du.f);
  }
  {
    Pair out = zeros(n), dx = input(n, rng);
    sft::cpu::gelu_tanh_forward<bf16>(out.b.data(), g.b.data(), n);
    sft::cpu::gelu_tanh_forward<float>(out.f.data(), g.f.data(), n);
    rounded_once("gelu forward", out.b, out.f);
    sft::cpu::gelu_tanh_backward<bf16>(dx.b.data(), dy.b.data(), g.b.data(), n);
    sft::cpu::gelu_tanh_backward<float>(dx.f.data(), dy.f.data(), g.f.data(), n);
    rounded_once("gelu backward (accumulated)", dx.b, dx.f);
  }
}

void check_embedding_and_loss(std::mt19937_64& rng) {
  const int64_t V = 301, C = 24, n = 40;
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; i++) ids[size_t(i)] = int32_t((i * 37 + 5) % 50);  // repeated ids: rows add up
  Pair table = input(V * C, rng), out = zeros(n * C), dout = input(n * C, rng);
  sft::cpu::embedding_forward<bf16>(out.b.data(), ids.data(), table.b.data(), n, C);
  sft::cpu::embedding_forward<float>(out.f.data(), ids.data(), table.f.data(), n, C);
  rounded_once("embedding forward", out.b, out.f);
  std::vector<float> gb(size_t(V * C), 0.f), gf = gb;
  sft::cpu::embedding_backward<bf16>(gb.data(), dout.b.data(), ids.data(), n, C);
  sft::cpu::embedding_backward<float>(gf.data(), dout.f.data(), ids.data(), n, C);
  same_f32("embedding backward (fp32 table gradient)", gb, gf, 1e-7);

  const int64_t N = 23;
  Pair logits = input(N * V, rng, 4.0);
  logits.b[5] = bf16(30.0f), logits.f[5] = 30.0f;  // a confident row: p_target near 1, dlogit = p - 1 small
  std::vector<int32_t> targets(N);
  for (int64_t i = 0; i < N; i++) targets[size_t(i)] = i % 6 == 3 ? -100 : int32_t((i * 53) % V);
  targets[0] = 5;
  int64_t cb = 0, cf = 0;
  const double lb = sft::cpu::cross_entropy<bf16>(logits.b.data(), targets.data(), N, V, 0.05f, true, &cb);
  const double lf = sft::cpu::cross_entropy<float>(logits.f.data(), targets.data(), N, V, 0.05f, true, &cf);
  report("bf16 cross-entropy: loss (double) equals the fp32 op's on the same logits", std::fabs(lb - lf) / std::fabs(lf) + (cb != cf), 1e-12);
  rounded_once("cross-entropy gradient (in place, target p - scale rounded once)", logits.b, logits.f);
}

// The backend's own loops: dropout (fp32 kernels on widened slices), casts, sums into fp32.
void check_backend_ops(std::mt19937_64& rng) {
  sft::CpuBackend<bf16> bb;
  sft::CpuBackend<float> bf;
  const int64_t rows = 37, cols = 1100;  // > one slice, several threads' chunks, an odd tail
  Pair x = input(rows * cols, rng), out = zeros(rows * cols), dx = input(rows * cols, rng), dxd = input(rows * cols, rng);
  bb.dropout_forward(out.b.data(), x.b.data(), rows, cols, 0.1, 99);
  bf.dropout_forward(out.f.data(), x.f.data(), rows, cols, 0.1, 99);
  rounded_once("dropout forward (mask and 1/(1-p) as fp32's)", out.b, out.f);
  bb.dropout_backward_add(dx.b.data(), dxd.b.data(), rows * cols, 0.1, 99);
  bf.dropout_backward_add(dx.f.data(), dxd.f.data(), rows * cols, 0.1, 99);
  rounded_once("dropout backward (added into d input)", dx.b, dx.f);
  int zeros_b = 0;
  for (const bf16& v : out.b) zeros_b += float(v) == 0.f;
  report("bf16 dropout drops about p of the elements", std::fabs(double(zeros_b) / double(rows * cols) - 0.1), 0.01);

  std::vector<float> master(50000);
  for (auto& v : master) v = float(randn(1, rng)[0]);
  std::vector<bf16> w(master.size());
  bb.cast(w.data(), master.data(), int64_t(master.size()));
  rounded_once("cast fp32 master -> bf16 compute copy", w, master);
  std::vector<float> back(master.size());
  bb.cast(back.data(), w.data(), int64_t(w.size()));
  report("bf16 cast bf16 -> fp32 is exact", rel_err(as_vec(back), as_vec(w)), 1e-300);

  std::vector<float> acc(cols, 0.5f), accf = acc;
  bb.add_rows_into(acc.data(), x.b.data(), 3, cols, cols);
  bf.add_rows_into(accf.data(), x.f.data(), 3, cols, cols);
  same_f32("add_rows_into an fp32 gradient (prompt tuning)", acc, accf, 1e-7);
  Pair y = input(1000, rng);
  bb.add_into(y.b.data(), x.b.data(), 1000);
  bf.add_into(y.f.data(), x.f.data(), 1000);
  rounded_once("add_into bf16", y.b, y.f);
}

// QLoRA's base: the same NF4 weight times bf16 and fp32 activations, forward and input gradient.
void check_nf4(std::mt19937_64& rng) {
  sft::CpuBackend<bf16> bb;
  sft::CpuBackend<float> bf;
  const int64_t M = 9, K = 128, N = 96;
  const Vec wv = randn(size_t(N * K), rng, 0.05);
  const std::vector<float> w(wv.begin(), wv.end());
  auto qb = bb.nf4_quantize(w.data(), N, K, {{0, 64}, {64, 32}}, true);  // two checkpoint tensors, as q/k
  auto qf = bf.nf4_quantize(w.data(), N, K, {{0, 64}, {64, 32}}, true);
  Pair x = input(M * K, rng), y = input(M * N, rng), dy = input(M * N, rng), dx = input(M * K, rng);
  bb.linear_forward_nf4(y.b.data(), x.b.data(), *qb, M, K, N, true);
  bf.linear_forward_nf4(y.f.data(), x.f.data(), *qf, M, K, N, true);
  close_norm("NF4 linear forward (accumulate)", as_vec(y.b), as_vec(y.f));
  bb.linear_backward_nf4(dx.b.data(), dy.b.data(), *qb, M, K, N);
  bf.linear_backward_nf4(dx.f.data(), dy.f.data(), *qf, M, K, N);
  close_norm("NF4 linear backward d input", as_vec(dx.b), as_vec(dx.f));
}

}  // namespace

void check_bf16_ops() {
  std::mt19937_64 rng(2026);
  check_rounding(rng);
  check_linear(rng);
  check_norms(rng);
  check_rope(rng);
  check_attention(rng);
  check_elementwise(rng);
  check_embedding_and_loss(rng);
  check_backend_ops(rng);
  check_nf4(rng);
}
