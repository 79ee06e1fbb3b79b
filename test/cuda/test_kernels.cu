// The CUDA backend's checks: every kernel against the CPU backend (the oracle) on random inputs,
// forward and backward, fp32 (norm-wise relative error < 1e-4) and bf16 (< 1e-2; the CPU runs in
// fp32 on the same bf16-rounded inputs). Prints one line per check and exits non-zero when any
// fails; with no usable device it prints "SKIP: no CUDA device (<error>)" and exits 0.
//
//   sft_cuda_tests                 the checks
//   sft_cuda_tests --only NAME     only the checks of one op family (rmsnorm, rope, swiglu, embedding,
//                                  cross-entropy, adamw, nf4, gemm, attention, linear, tensor, dropout,
//                                  layernorm, l2norm, gelu, alibi, mma, paged, qlora), e.g. under a sanitizer
//   sft_cuda_tests --no-large      skip the long-sequence attention case (sanitizers are slow)
//   sft_cuda_tests --only models --arch llama   whole-model checks of one architecture
//   sft_cuda_tests --bench         micro-benchmarks instead (bench_kernels.cu; --json FILE, --quick)
//   sft_cuda_tests --step          one Llama-2-7B-shaped LoRA training step, timed (bench_step.cu)
//
// The same source also builds against test/cuda/emu (sft_cuda_emu_tests): a CPU emulation of the
// kernels that checks their logic on machines without a GPU. Only a real GPU run counts as
// verification; until scripts/gpu-check.sh has passed on one, treat the CUDA backend as unverified.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "../native/check.h"
#include "core/random.h"
#include "cpu/gemm.h"
#include "cpu/ops.h"
#include "cpu/quant.h"
#include "cuda/attention_mma.cuh"
#include "cuda/device.h"
#include "cuda/mma_probe.cuh"
#include "cuda/ops.cuh"
#include "cuda_test_util.cuh"

namespace cu = sft::cuda;
namespace cpu = sft::cpu;
using cu::bf16;

namespace {

constexpr double kTolF32 = 1e-4, kTolBF16 = 1e-2;

template <typename T>
double tol() {
  return std::is_same<T, float>::value ? kTolF32 : kTolBF16;
}
template <typename T>
std::string tname() {
  return std::is_same<T, float>::value ? "fp32" : "bf16";
}

std::mt19937_64 rng(20261126);

// ---------------------------------------------------------------------------------------------

template <typename T>
void check_rmsnorm() {
  const int64_t N = 65, C = 1000;
  const double eps = 1e-5;
  auto x = as<T>(randf(N * C, rng)), w = as<T>(randf(C, rng, 1.0, 1.0)), dy = as<T>(randf(N * C, rng));
  auto dx0 = as<T>(randf(N * C, rng, 0.1)), dw0 = randf(C, rng, 0.1);
  std::vector<float> y(N * C), rstd(N), dx = dx0, dw = dw0;
  cpu::rmsnorm_forward<float>(y.data(), rstd.data(), x.data(), w.data(), N, C, eps);
  cpu::rmsnorm_backward<float>(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), N, C);

  Dev<T> gx(x), gw(w), gdy(dy), gy(N * C), gdx(dx0);
  Dev<float> grstd(N), gdw(dw0);
  cu::rmsnorm_forward<T>(gy.p, grstd.p, gx.p, gw.p, N, C, eps);
  cu::rmsnorm_backward<T>(gdx.p, gdw.p, gdy.p, gx.p, gw.p, grstd.p, N, C);
  const std::string n = "cuda rmsnorm " + tname<T>();
  expect(n + ": forward", gy.floats(), y, tol<T>());
  expect(n + ": rstd", grstd.floats(), rstd, kTolF32);
  expect(n + ": d input (+=)", gdx.floats(), dx, tol<T>());
  expect(n + ": d weight (+=, fp32)", gdw.floats(), dw, tol<T>());
}

template <typename T>
void check_rope() {
  const int64_t B = 2, Tt = 7, p0 = 3, max_pos = 16;
  const int heads = 3, hd = 16, half = hd / 2;
  const int64_t ld = heads * hd + 5, rows = B * Tt;
  std::vector<float> cs(max_pos * half), sn(max_pos * half);
  for (int64_t p = 0; p < max_pos; p++)
    for (int i = 0; i < half; i++) {
      const double a = double(p) * std::pow(10000.0, -2.0 * i / hd);
      cs[p * half + i] = float(std::cos(a));
      sn[p * half + i] = float(std::sin(a));
    }
  auto x = as<T>(randf(rows * ld, rng)), dx = as<T>(randf(rows * ld, rng));
  std::vector<float> y = x, dy = dx;
  cpu::rope_forward<float>(y.data(), ld, rows, Tt, p0, heads, hd, cs.data(), sn.data());
  cpu::rope_backward<float>(dy.data(), ld, rows, Tt, p0, heads, hd, cs.data(), sn.data());
  Dev<T> gx(x), gdx(dx);
  Dev<float> gcs(cs), gsn(sn);
  cu::rope_forward<T>(gx.p, ld, rows, Tt, p0, heads, hd, gcs.p, gsn.p);
  cu::rope_backward<T>(gdx.p, ld, rows, Tt, p0, heads, hd, gcs.p, gsn.p);
  expect("cuda rope " + tname<T>() + ": forward (strided rows, p0 = 3)", gx.floats(), y, tol<T>());
  expect("cuda rope " + tname<T>() + ": backward", gdx.floats(), dy, tol<T>());
}

template <typename T>
void check_swiglu() {
  const int64_t n = 10001;
  auto g = as<T>(randf(n, rng, 2.0)), u = as<T>(randf(n, rng)), dy = as<T>(randf(n, rng));
  auto dg0 = as<T>(randf(n, rng, 0.1)), du0 = as<T>(randf(n, rng, 0.1));
  std::vector<float> y(n), dg = dg0, du = du0;
  cpu::swiglu_forward<float>(y.data(), g.data(), u.data(), n);
  cpu::swiglu_backward<float>(dg.data(), du.data(), dy.data(), g.data(), u.data(), n);
  Dev<T> gg(g), gu(u), gdy(dy), gy(n), gdg(dg0), gdu(du0);
  cu::swiglu_forward<T>(gy.p, gg.p, gu.p, n);
  cu::swiglu_backward<T>(gdg.p, gdu.p, gdy.p, gg.p, gu.p, n);
  expect("cuda swiglu " + tname<T>() + ": forward", gy.floats(), y, tol<T>());
  expect("cuda swiglu " + tname<T>() + ": d gate (+=)", gdg.floats(), dg, tol<T>());
  expect("cuda swiglu " + tname<T>() + ": d up (+=)", gdu.floats(), du, tol<T>());
}

template <typename T>
void check_embedding() {
  const int64_t V = 50, C = 300, n = 200;
  std::vector<int32_t> ids(n);
  std::uniform_int_distribution<int32_t> pick(0, int32_t(V) - 1);
  for (auto& i : ids) i = pick(rng) % 7 == 0 ? 3 : pick(rng);  // many repeats of id 3
  auto table = as<T>(randf(V * C, rng)), dy = as<T>(randf(n * C, rng));
  auto dt0 = randf(V * C, rng, 0.1);
  std::vector<float> y(n * C), dt = dt0;
  cpu::embedding_forward<float>(y.data(), ids.data(), table.data(), n, C);
  cpu::embedding_backward<float>(dt.data(), dy.data(), ids.data(), n, C);
  Dev<T> gtable(table), gy(n * C), gdy(dy);
  Dev<int32_t> gids(ids);
  Dev<float> gdt(dt0);
  cu::embedding_forward<T>(gy.p, gids.p, gtable.p, n, C);
  cu::embedding_backward<T>(gdt.p, gdy.p, gids.p, n, C);
  expect("cuda embedding " + tname<T>() + ": forward", gy.floats(), y, 1e-12);
  expect("cuda embedding " + tname<T>() + ": d table (+=, fp32, repeated ids)", gdt.floats(), dt, tol<T>());
}

template <typename T>
void check_cross_entropy() {
  const int64_t N = 37, V = 3001;
  std::vector<int32_t> targets(N);
  std::uniform_int_distribution<int32_t> pick(0, int32_t(V) - 1);
  for (int64_t i = 0; i < N; i++) targets[i] = i % 8 == 5 ? -100 : pick(rng);
  auto logits = as<T>(randf(N * V, rng, 3.0));
  const float scale = 1.f / 32.f;
  std::vector<float> grad = logits;
  int64_t count_cpu = 0, count_gpu = -1, count_nograd = -1;
  const double loss_cpu = cpu::cross_entropy<float>(grad.data(), targets.data(), N, V, scale, true, &count_cpu);
  Dev<T> gl(logits), gl2(logits);
  Dev<int32_t> gt(targets);
  const double loss_gpu = cu::cross_entropy<T>(gl.p, gt.p, N, V, scale, true, &count_gpu);
  const double loss_nograd = cu::cross_entropy<T>(gl2.p, gt.p, N, V, scale, false, &count_nograd);
  const std::string n = "cuda cross-entropy " + tname<T>();
  report(n + ": loss sum", std::fabs(loss_gpu - loss_cpu) / std::fabs(loss_cpu), tol<T>());
  report(n + ": loss sum without grad", std::fabs(loss_nograd - loss_cpu) / std::fabs(loss_cpu), tol<T>());
  report(n + ": counted rows (ignore -100)", count_gpu == count_cpu && count_nograd == count_cpu ? 0.0 : 1.0, 0.5);
  expect(n + ": dlogits in place (ignored rows zero)", gl.floats(), grad, tol<T>());
  expect(n + ": logits untouched without grad", gl2.floats(), logits, 1e-12);
}

void check_adamw() {
  const int64_t n = 10007;
  auto p = randf(n, rng);
  std::vector<float> m(n, 0.f), v(n, 0.f);
  Dev<float> gp(p), gm(m), gv(v), gg(n);
  for (int64_t t = 1; t <= 3; t++) {
    auto g = randf(n, rng);
    gg.upload(g);
    cpu::adamw_update<float>(p.data(), g.data(), m.data(), v.data(), n, 1e-3, 0.9, 0.999, 1e-8, 0.01, t, 0.5);
    cu::adamw_update(gp.p, gg.p, gm.p, gv.p, n, 1e-3, 0.9, 0.999, 1e-8, 0.01, t, 0.5);
  }
  expect("cuda adamw fp32: params after 3 steps (grad_scale 0.5, wd 0.01)", gp.floats(), p, kTolF32);
  expect("cuda adamw fp32: first moments", gm.floats(), m, kTolF32);
  expect("cuda adamw fp32: second moments", gv.floats(), v, kTolF32);

  const std::vector<int64_t> sizes = {1000, 1, 70000, 333};
  std::vector<Dev<float>> grads;
  std::vector<const float*> ptrs;
  double ss = 0;
  for (int64_t s : sizes) {
    auto g = randf(s, rng);
    for (float x : g) ss += double(x) * double(x);
    grads.emplace_back(g);
  }
  for (auto& d : grads) ptrs.push_back(d.p);
  const double norm = cu::global_grad_norm(ptrs.data(), sizes.data(), int(sizes.size()));
  const double norm2 = cu::global_grad_norm(ptrs.data(), sizes.data(), int(sizes.size()));
  report("cuda global grad norm (4 tensors, fp64 sums)", std::fabs(norm - std::sqrt(ss)) / std::sqrt(ss), 1e-9);
  report("cuda global grad norm: repeatable bit for bit", norm == norm2 ? 0.0 : 1.0, 0.5);
  // What the finite check after AdamW relies on: one NaN or Inf anywhere makes the norm non-finite,
  // and the largest fp32 values do not (their squares fit a double).
  bool all_seen = true;
  for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
    std::vector<float> x = randf(sizes[2], rng);
    x[sizes[2] - 1] = bad;
    grads[2].upload(x);
    all_seen = all_seen && !std::isfinite(cu::global_grad_norm(ptrs.data(), sizes.data(), int(sizes.size())));
  }
  grads[2].upload(std::vector<float>(size_t(sizes[2]), 3.4e38f));
  const bool large_finite = std::isfinite(cu::global_grad_norm(ptrs.data(), sizes.data(), int(sizes.size())));
  report("cuda global grad norm: non-finite with one NaN/Inf, finite with values of 3.4e38", all_seen && large_finite ? 0.0 : 1.0, 0.5);
}

void check_nf4() {
  const int64_t n = 64 * 257 + 11;  // odd: a half byte, a partial 64-block, two 256-blocks of scales
  auto x = randf(n, rng, 0.02);
  const cpu::Nf4Tensor t = cpu::nf4_quantize_tensor(x.data(), n, true);
  std::vector<float> ref(n);
  cpu::nf4_dequantize(ref.data(), t.packed.data(), t.absmax.data(), n);
  const int64_t blocks = int64_t(t.absmax.size());
  Dev<uint8_t> packed(t.packed), aq(t.absmax_q);
  Dev<float> a2(t.absmax2), code(cpu::dynamic_map_signed()), absmax(blocks), out(n);
  Dev<bf16> outb(n);
  cu::nf4_decode_absmax(absmax.p, aq.p, a2.p, code.p, t.offset, blocks);
  expect("cuda nf4: double-quant absmax decode (bit-exact)", absmax.floats(), t.absmax, 1e-30);
  cu::nf4_dequantize<float>(out.p, packed.p, absmax.p, n);
  expect("cuda nf4: dequantize fp32 (bit-exact)", out.floats(), ref, 1e-30);
  out.zero();
  cu::nf4_dequantize_dq<float>(out.p, packed.p, aq.p, a2.p, code.p, t.offset, n);
  expect("cuda nf4: dequantize fp32, scales decoded on the fly (bit-exact)", out.floats(), ref, 1e-30);
  cu::nf4_dequantize_dq<bf16>(outb.p, packed.p, aq.p, a2.p, code.p, t.offset, n);
  expect("cuda nf4: dequantize bf16 (= rounded fp32)", outb.floats(), as<bf16>(ref), 1e-30);
}

// C = beta C + alpha opA opB^T with padded leading dimensions, all four transpose combinations.
template <typename T, typename TC>
void check_gemm(bool tiled) {
  const int64_t M = 67, N = 45, K = 131;
  const float alpha = 0.7f, beta = 0.3f;
  for (int tt = 0; tt < 4; tt++) {
    const bool ta = tt & 1, tb = tt & 2;
    const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? N : K) + 5, ldc = N + 2;
    auto A = as<T>(randf((ta ? K : M) * lda, rng)), B = as<T>(randf((tb ? K : N) * ldb, rng));
    auto C = as<TC>(randf(M * ldc, rng));
    std::vector<float> ref = C;
    cpu::gemm<float>(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, ref.data(), ldc);
    Dev<T> gA(A), gB(B);
    Dev<TC> gC(C);
    if (tiled)
      cu::gemm_tiled<T, TC>(ta, tb, M, N, K, alpha, gA.p, lda, gB.p, ldb, beta, gC.p, ldc);
    else
      cu::gemm<T, TC>(ta, tb, M, N, K, alpha, gA.p, lda, gB.p, ldb, beta, gC.p, ldc);
    const std::string n = std::string("cuda ") + (tiled ? "gemm_tiled " : "gemm ") + tname<T>() + "->" + tname<TC>() +
                          (ta ? " ta" : "") + (tb ? " tb" : "") + " 67x45x131, beta 0.3";
    expect(n, gC.floats(), ref, tol<TC>() > tol<T>() ? tol<TC>() : tol<T>());
  }
}

// The cuBLASLt path's row-major -> column-major mapping, evaluated on the host with a plain
// column-major product (what cuBLAS computes) against cpu::gemm: runs without cuBLAS.
void check_col_major_mapping() {
  const int64_t M = 13, N = 7, K = 9;
  for (int tt = 0; tt < 4; tt++) {
    const bool ta = tt & 1, tb = tt & 2;
    const int64_t lda = (ta ? M : K) + 2, ldb = (tb ? N : K) + 3, ldc = N + 1;
    auto A = randf((ta ? K : M) * lda, rng), B = randf((tb ? K : N) * ldb, rng);
    std::vector<float> ref(M * ldc, 0.f), out(M * ldc, 0.f);
    cpu::gemm<float>(ta, tb, M, N, K, 1.f, A.data(), lda, B.data(), ldb, 0.f, ref.data(), ldc);
    const cu::ColMajorGemm g = cu::col_major_gemm(ta, tb, M, N, K, lda, ldb, ldc);
    // Stored shapes must match the ops (op(A): m x k, op(B): k x n) and fit their leading dims.
    const bool shapes_ok = (g.trans_a ? g.a_cols : g.a_rows) == g.m && (g.trans_a ? g.a_rows : g.a_cols) == g.k &&
                           (g.trans_b ? g.b_cols : g.b_rows) == g.k && (g.trans_b ? g.b_rows : g.b_cols) == g.n &&
                           g.a_rows <= g.lda && g.b_rows <= g.ldb && g.m <= g.ldc;
    const float* ca = B.data();  // cuBLAS's A is our B, its B our A
    const float* cb = A.data();
    for (int64_t i = 0; i < g.m; i++)
      for (int64_t j = 0; j < g.n; j++) {
        double acc = 0;
        for (int64_t p = 0; p < g.k; p++) {
          const float a = g.trans_a ? ca[p + i * g.lda] : ca[i + p * g.lda];
          const float b = g.trans_b ? cb[j + p * g.ldb] : cb[p + j * g.ldb];
          acc += double(a) * double(b);
        }
        out[i + j * g.ldc] = float(acc);
      }
    report(std::string("cuda gemm: cuBLASLt column-major mapping") + (ta ? " ta" : "") + (tb ? " tb" : ""),
           shapes_ok ? rel(out, ref) : 1.0, 1e-5);
  }
}

// Host reference of the forward's logsumexp (double). qhs / kvhs: head column strides (0: hd);
// slopes: ALiBi's, added as slopes[h] * j (null: none).
std::vector<float> lse_ref(const std::vector<float>& q, int64_t ldq, const std::vector<float>& kv, int64_t koff,
                           int64_t ldkv, int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh, int nkv, int hd,
                           int64_t qhs = 0, int64_t kvhs = 0, const float* slopes = nullptr) {
  std::vector<float> out(B * nh * Tq);
  const double scale = 1.0 / std::sqrt(double(hd));
  const int64_t qs = qhs ? qhs : hd, ks = kvhs ? kvhs : hd;
  for (int64_t b = 0; b < B; b++)
    for (int h = 0; h < nh; h++)
      for (int64_t i = 0; i < Tq; i++) {
        const int kvh = h / (nh / nkv);
        std::vector<double> s;
        for (int64_t j = 0; j <= p0 + i; j++) {
          double d = 0;
          for (int c = 0; c < hd; c++)
            d += double(q[(b * Tq + i) * ldq + h * qs + c]) * double(kv[(b * Tk + j) * ldkv + koff + kvh * ks + c]);
          s.push_back(d * scale + (slopes ? double(slopes[h]) * double(j) : 0.0));
        }
        double mx = -INFINITY, sum = 0;
        for (double x : s) mx = std::max(mx, x);
        for (double x : s) sum += std::exp(x - mx);
        out[(b * nh + h) * Tq + i] = float(mx + std::log(sum));
      }
  return out;
}

// The warp-level matrix instructions (mma.cuh) against a scalar product, on a GPU and under the
// emulator alike. Every input element is distinct (random), so a fragment mapping that swaps rows
// and columns, the halves of a register, or two lanes' elements gives a different product.
void check_mma() {
  auto A = as<bf16>(randf(256, rng)), Bkn = as<bf16>(randf(256, rng)), C = randf(256, rng);
  std::vector<float> Bnk(256);
  for (int k = 0; k < 16; k++)
    for (int n = 0; n < 16; n++) Bnk[n * 16 + k] = Bkn[k * 16 + n];
  const int a_rows = 13;  // rows 13..15 of A read as zero: cp.async's zero-fill
  std::vector<float> ref(256);
  for (int m = 0; m < 16; m++)
    for (int n = 0; n < 16; n++) {
      double acc = C[m * 16 + n];
      for (int k = 0; k < 16; k++) acc += (m < a_rows ? double(A[m * 16 + k]) : 0.0) * double(Bkn[k * 16 + n]);
      ref[m * 16 + n] = float(acc);
    }
  Dev<bf16> ga(A), gbkn(Bkn), gbnk(Bnk);
  Dev<float> gc(C), gd(256);
  const struct {
    cu::MmaProbe mode;
    const char* name;
  } modes[] = {{cu::MmaProbe::kFragments, "A/B fragments by the PTX layout, mma.sync m16n8k16 bf16"},
               {cu::MmaProbe::kLdmatrix, "cp.async (zero-fill) + ldmatrix.x4 + mma.sync"},
               {cu::MmaProbe::kLdmatrixTrans, "cp.async (zero-fill) + ldmatrix.x4 / .x4.trans + mma.sync"}};
  for (const auto& m : modes) {
    cu::mma_probe(gd.p, ga.p, m.mode == cu::MmaProbe::kLdmatrix ? gbnk.p : gbkn.p, gc.p, a_rows, m.mode);
    expect(std::string("cuda warp matrix instructions: ") + m.name + ", D = A B + C (16x16x16)", gd.floats(), ref,
           1e-5);
  }
}

struct AttnCase {
  int64_t B, Tq, Tk, p0;
  int nh, nkv, hd;
  bool generic;     // call the generic kernels explicitly
  int64_t pad = 8;  // row padding of q and kv (elements); not a multiple of 8: no tensor cores
};

// q: [B*Tq, ldq]; k and v inside one [B*Tk, ldkv] buffer (k at column 0, v at nkv*hd), padded.
template <typename T>
void check_attention(const AttnCase& c, bool check_determinism = false) {
  const int64_t ldq = int64_t(c.nh) * c.hd + c.pad, ldkv = 2 * int64_t(c.nkv) * c.hd + c.pad;
  const int64_t voff = int64_t(c.nkv) * c.hd, ldo = int64_t(c.nh) * c.hd;
  auto q = as<T>(randf(c.B * c.Tq * ldq, rng)), kv = as<T>(randf(c.B * c.Tk * ldkv, rng));
  auto dout = as<T>(randf(c.B * c.Tq * ldo, rng));
  auto dq0 = as<T>(randf(q.size(), rng, 0.1)), dkv0 = as<T>(randf(kv.size(), rng, 0.1));
  std::vector<float> out(c.B * c.Tq * ldo), clse(c.B * c.nh * c.Tq), dq = dq0, dkv = dkv0;
  cpu::attention_forward<float>(out.data(), clse.data(), q.data(), ldq, kv.data(), kv.data() + voff, ldkv, c.B, c.Tq,
                                c.Tk, c.p0, c.nh, c.nkv, c.hd);
  cpu::attention_backward<float>(dq.data(), dkv.data(), dkv.data() + voff, dout.data(), out.data(), clse.data(),
                                 q.data(), ldq, kv.data(), kv.data() + voff, ldkv, c.B, c.Tq, c.Tk, c.p0, c.nh, c.nkv,
                                 c.hd);
  const auto lse = lse_ref(q, ldq, kv, 0, ldkv, c.B, c.Tq, c.Tk, c.p0, c.nh, c.nkv, c.hd);

  Dev<T> gq(q), gkv(kv), gdout(dout), gout(out.size()), gdq(dq0), gdkv(dkv0);
  Dev<float> glse(lse.size());
  auto fwd = c.generic ? cu::attention_forward_generic<T> : cu::attention_forward<T>;
  auto bwd = c.generic ? cu::attention_backward_generic<T> : cu::attention_backward<T>;
  fwd(gout.p, glse.p, gq.p, ldq, gkv.p, gkv.p + voff, ldkv, c.B, c.Tq, c.Tk, c.p0, c.nh, c.nkv, c.hd, nullptr);
  bwd(gdq.p, gdkv.p, gdkv.p + voff, gdout.p, gout.p, glse.p, gq.p, ldq, gkv.p, gkv.p + voff, ldkv, c.B, c.Tq, c.Tk,
      c.p0, c.nh, c.nkv, c.hd, nullptr);
  // Which kernels attention_forward/backward picked (attention.cu's dispatch).
  const void* ptrs[] = {gout.p, gq.p, gkv.p, gkv.p + voff, gdq.p, gdkv.p, gdkv.p + voff, gdout.p};
  const bool mma = std::is_same<T, bf16>::value && !c.generic && cu::attention_mma_fits(c.hd, ldq, ldkv, ptrs, 8);
  char name[180];
  std::snprintf(name, sizeof name, "cuda attention %s%s hd %d B %lld Tq %lld Tk %lld p0 %lld nh %d nkv %d%s",
                tname<T>().c_str(),
                c.generic ? " generic" : mma ? " mma" : (c.hd == 64 || c.hd == 128 ? " tiled" : " (generic)"), c.hd,
                (long long)c.B, (long long)c.Tq, (long long)c.Tk, (long long)c.p0, c.nh, c.nkv,
                c.pad % 8 ? " (rows not 16-byte aligned)" : "");
  const std::string n = name;
  expect(n + ": out", gout.floats(), out, tol<T>());
  expect(n + ": lse", glse.floats(), lse, kTolF32);
  expect(n + ": dq (+=)", gdq.floats(), dq, tol<T>());
  expect(n + ": dk dv (+=)", gdkv.floats(), dkv, tol<T>());
  if (check_determinism) {
    Dev<T> gdq2(dq0), gdkv2(dkv0);
    bwd(gdq2.p, gdkv2.p, gdkv2.p + voff, gdout.p, gout.p, glse.p, gq.p, ldq, gkv.p, gkv.p + voff, ldkv, c.B, c.Tq,
        c.Tk, c.p0, c.nh, c.nkv, c.hd, nullptr);
    const bool same = gdq2.bytes() == gdq.bytes() && gdkv2.bytes() == gdkv.bytes();
    report(n + ": backward repeatable bit for bit", same ? 0.0 : 1.0, 0.5);
  }
}

template <typename T>
void check_attention_all(bool large) {
  check_attention<T>({2, 77, 77, 0, 4, 2, 64, false}, true);   // GQA, partial tiles
  check_attention<T>({2, 70, 70, 0, 4, 1, 128, false}, true);  // multi-query
  check_attention<T>({2, 20, 45, 25, 4, 2, 64, false});        // KV cache: a chunk after 25 cached tokens
  check_attention<T>({1, 1, 33, 32, 2, 2, 128, false});        // decoding one token
  check_attention<T>({2, 40, 40, 0, 4, 2, 32, false});         // other head dims: generic kernels
  check_attention<T>({1, 30, 37, 7, 2, 1, 80, false});
  check_attention<T>({1, 50, 50, 0, 2, 1, 64, true});          // generic kernels on a tiled head dim
  check_attention<T>({1, 300, 300, 0, 2, 1, 128, false});      // many tiles both ways
  if (large) check_attention<T>({1, 1100, 1100, 0, 2, 2, 64, false});
  if (std::is_same<T, bf16>::value) check_attention<T>({2, 77, 77, 0, 4, 2, 64, false, 4});  // SIMT fallback
}

// The tensor-core kernels (bf16, head_dim 64 and 128): every sequence length class (one token,
// partial tiles, exact tiles, several tiles plus a partial one), GQA 4:1 and 1:1, batch 2, and the
// KV-cache forms. Small head counts keep the emulator quick.
void check_attention_mma() {
  for (int hd : {64, 128})
    for (int64_t T : {1, 17, 64, 130, 257}) {
      check_attention<bf16>({2, T, T, 0, 4, 1, hd, false}, T == 130);  // GQA 4:1
      check_attention<bf16>({2, T, T, 0, 1, 1, hd, false});            // 1:1
    }
  check_attention<bf16>({2, 70, 150, 80, 4, 1, 128, false});  // prefill after 80 cached tokens
  check_attention<bf16>({2, 1, 100, 99, 2, 2, 64, false});    // decoding one token
}

// ---------------------------------------------------------------------------------------------
// Ops the CUDA model backend needs beyond the Llama family's.

// Elements whose bit patterns differ (a size mismatch counts every element).
template <typename T>
double bits_differ(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return double(std::max(a.size(), b.size()));
  size_t n = 0;
  for (size_t i = 0; i < a.size(); i++) n += std::memcmp(&a[i], &b[i], sizeof(T)) != 0;
  return double(n);
}

std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> b(v.size());
  for (size_t i = 0; i < v.size(); i++) b[i] = __float2bfloat16_rn(v[i]);
  return b;
}

template <typename T>
void check_linear() {
  const int64_t M = 77, N = 300;  // 3 row chunks for the bias gradient (32, 32, 13 rows)
  auto out0 = as<T>(randf(M * N, rng)), bias = as<T>(randf(N, rng)), dy = as<T>(randf(M * N, rng));
  auto db0 = randf(N, rng, 0.1);
  std::vector<float> out = out0, db = db0;
  cpu::add_bias<float>(out.data(), bias.data(), M, N);
  cpu::linear_backward<float>(nullptr, nullptr, db.data(), dy.data(), nullptr, nullptr, M, 1, N);
  Dev<T> gout(out0), gbias(bias), gdy(dy);
  Dev<float> gdb(db0);
  cu::add_bias<T>(gout.p, gbias.p, M, N);
  cu::bias_backward<T>(gdb.p, gdy.p, M, N);
  expect("cuda linear " + tname<T>() + ": add_bias (+=)", gout.floats(), out, tol<T>());
  expect("cuda linear " + tname<T>() + ": bias_backward (+=, fp32)", gdb.floats(), db, tol<T>());
}

void check_tensor() {
  // cast: random values plus the cases rounding gets wrong (ties to even, -0, tiny and huge values).
  const int64_t n = 1000;
  auto x = randf(n, rng, 10.0);
  const float special[] = {1.f + 1.f / 256, 1.f + 3.f / 256, -(1.f + 1.f / 256), -0.f, 1e-40f, 3.3e38f, 0.f};
  for (size_t i = 0; i < std::size(special); i++) x[i] = special[i];
  Dev<float> gx(x), gf(n), gf2(n);
  Dev<bf16> gb(n);
  cu::cast<float, bf16>(gb.p, gx.p, n);
  report("cuda tensor: cast fp32 -> bf16 (round to nearest even, bit-exact)", bits_differ(gb.get(), to_bf16(x)), 0.5);
  cu::cast<bf16, float>(gf.p, gb.p, n);
  report("cuda tensor: cast bf16 -> fp32 (bit-exact)", bits_differ(gf.get(), as<bf16>(x)), 0.5);
  cu::cast<float, float>(gf2.p, gx.p, n);
  report("cuda tensor: cast fp32 -> fp32 (bit-exact)", bits_differ(gf2.get(), x), 0.5);

  // copy_2d: rows of a strided matrix into another (a KV-cache write); the gaps are left alone.
  {
    const int64_t rows = 37, cols = 300, ld_src = 310, ld_dst = 517;
    auto src = randf(rows * ld_src, rng), dst0 = randf(rows * ld_dst, rng);
    std::vector<float> want = dst0;
    for (int64_t r = 0; r < rows; r++)
      for (int64_t c = 0; c < cols; c++) want[r * ld_dst + c] = src[r * ld_src + c];
    Dev<float> gs(src), gd(dst0);
    Dev<bf16> gsb(src), gdb(dst0);
    cu::copy_2d<float>(gd.p, ld_dst, gs.p, ld_src, rows, cols);
    cu::copy_2d<bf16>(gdb.p, ld_dst, gsb.p, ld_src, rows, cols);
    report("cuda tensor: copy_2d fp32 (strided rows, bit-exact)", bits_differ(gd.get(), want), 0.5);
    report("cuda tensor: copy_2d bf16 (strided rows, bit-exact)", bits_differ(gdb.get(), to_bf16(want)), 0.5);
  }

  // add_into and add_rows_into: the host loops in fp32 (one rounding to bf16 where dst is bf16).
  const int64_t m = 10007, rows = 5, cols = 3000, ld = 3301;
  auto a = randf(m, rng), b = randf(m, rng);
  auto blocks = randf(rows * ld, rng), acc0 = randf(cols, rng);
  auto add_ref = [](std::vector<float> d, const std::vector<float>& s) {
    for (size_t i = 0; i < d.size(); i++) d[i] += s[i];
    return d;
  };
  auto rows_ref = [&](std::vector<float> d, const std::vector<float>& s) {
    for (int64_t r = 0; r < rows; r++)
      for (int64_t c = 0; c < cols; c++) d[c] += s[r * ld + c];
    return d;
  };
  {
    Dev<float> gd(a), gs(b), gr(acc0), gblk(blocks);
    cu::add_into<float, float>(gd.p, gs.p, m);
    cu::add_rows_into<float, float>(gr.p, gblk.p, rows, cols, ld);
    report("cuda tensor: add_into fp32 += fp32 (bit-exact)", bits_differ(gd.get(), add_ref(a, b)), 0.5);
    report("cuda tensor: add_rows_into fp32 += fp32 (rows in order, bit-exact)",
           bits_differ(gr.get(), rows_ref(acc0, blocks)), 0.5);
  }
  {
    Dev<float> gd(a), gr(acc0);
    Dev<bf16> gs(b), gblk(blocks);
    cu::add_into<float, bf16>(gd.p, gs.p, m);
    cu::add_rows_into<float, bf16>(gr.p, gblk.p, rows, cols, ld);
    report("cuda tensor: add_into fp32 += bf16 (bit-exact)", bits_differ(gd.get(), add_ref(a, as<bf16>(b))), 0.5);
    report("cuda tensor: add_rows_into fp32 += bf16 (bit-exact)",
           bits_differ(gr.get(), rows_ref(acc0, as<bf16>(blocks))), 0.5);
  }
  {
    Dev<bf16> gd(a), gs(b), gr(acc0), gblk(blocks);
    cu::add_into<bf16, bf16>(gd.p, gs.p, m);
    cu::add_rows_into<bf16, bf16>(gr.p, gblk.p, rows, cols, ld);
    report("cuda tensor: add_into bf16 += bf16 (fp32 sum rounded, bit-exact)",
           bits_differ(gd.get(), to_bf16(add_ref(as<bf16>(a), as<bf16>(b)))), 0.5);
    report("cuda tensor: add_rows_into bf16 += bf16 (fp32 sum rounded once, bit-exact)",
           bits_differ(gr.get(), to_bf16(rows_ref(as<bf16>(acc0), as<bf16>(blocks)))), 0.5);
  }
}

// LoRA dropout against a host evaluation of core/random.h, element for element. The key is
// model/lora.h's mask_key; it must give the mask the CPU model code has always drawn
// (uniform01(seed, mix(step * 0x100000001b3), i), as model/store.h's dropped() wrote it).
template <typename T>
void check_dropout() {
  const int64_t n = 10007;  // not a multiple of the 256-thread blocks
  const uint64_t seed = 0x5eed1234abcdull;
  for (double p : {0.1, 0.5}) {
    const int64_t step = p < 0.3 ? 7 : 123456;
    const uint64_t key = sft::rng::stream_key(seed, sft::rng::dropout_stream(step));
    auto x = as<T>(randf(n, rng)), dxd = as<T>(randf(n, rng)), dx0 = as<T>(randf(n, rng, 0.1));
    const float keep = float(1.0 / (1.0 - p));
    std::vector<float> out(n), dx = dx0;
    std::vector<char> mask(n);
    int64_t dropped = 0, key_mismatch = 0;
    for (int64_t i = 0; i < n; i++) {
      mask[i] = sft::rng::uniform01_key(key, uint64_t(i)) < p;
      key_mismatch += mask[i] != (sft::rng::uniform01(seed, sft::rng::mix(uint64_t(step) * 0x100000001b3ull), i) < p);
      dropped += mask[i];
      out[i] = mask[i] ? 0.f : x[i] * keep;
      if (!mask[i]) {
        const float prod = dxd[i] * keep;  // separately rounded, as the CPU's dx[i] += dxin[i] * keep
        dx[i] += prod;
      }
    }
    Dev<T> gx(x), gout(n), gdxd(dxd), gdx(dx0);
    cu::dropout_forward<T>(gout.p, gx.p, n, p, key);
    cu::dropout_backward_add<T>(gdx.p, gdxd.p, n, p, key);
    const auto got = gout.floats();
    int64_t mask_mismatch = 0;
    for (int64_t i = 0; i < n; i++) mask_mismatch += (got[i] == 0.f && x[i] != 0.f) != bool(mask[i]);
    char name[96];
    std::snprintf(name, sizeof name, "cuda dropout %s p %.1f n %lld", tname<T>().c_str(), p, (long long)n);
    const std::string nm = name;
    report(nm + ": mask key = the CPU model's step stream (host)", double(key_mismatch), 0.5);
    report(nm + ": mask = random.h's, element for element", double(mask_mismatch), 0.5);
    report(nm + ": forward = host x * keep (bit-exact)", bits_differ(got, as<T>(out)), 0.5);
    report(nm + ": backward dx += dxd * keep (bit-exact)", bits_differ(gdx.floats(), as<T>(dx)), 0.5);
    // 5 standard deviations of the dropped fraction of n Bernoulli(p) draws
    report(nm + ": fraction dropped - p", std::fabs(double(dropped) / double(n) - p), 5 * std::sqrt(p * (1 - p) / n));
  }
}

template <typename T>
void check_layernorm() {
  const int64_t N = 65, C = 1000;
  const double eps = 1e-5;
  // A mean offset well above the spread: the variance must be the centred one.
  auto x = as<T>(randf(N * C, rng, 1.0, 3.0)), w = as<T>(randf(C, rng, 1.0, 1.0)), b = as<T>(randf(C, rng));
  auto dy = as<T>(randf(N * C, rng));
  auto dx0 = as<T>(randf(N * C, rng, 0.1)), dw0 = randf(C, rng, 0.1), db0 = randf(C, rng, 0.1);
  std::vector<float> y(N * C), mean(N), rstd(N), dx = dx0, dw = dw0, db = db0, db_only = db0;
  cpu::layernorm_forward<float>(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, eps);
  cpu::layernorm_backward<float>(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), mean.data(),
                                 rstd.data(), N, C);
  std::vector<float> scratch(N * C);  // the CPU op always writes dinp
  cpu::layernorm_backward<float>(scratch.data(), nullptr, db_only.data(), dy.data(), x.data(), w.data(), mean.data(),
                                 rstd.data(), N, C);
  Dev<T> gx(x), gw(w), gb(b), gdy(dy), gy(N * C), gdx(dx0);
  Dev<float> gmean(N), grstd(N), gdw(dw0), gdb(db0), gdb2(db0);
  cu::layernorm_forward<T>(gy.p, gmean.p, grstd.p, gx.p, gw.p, gb.p, N, C, eps);
  cu::layernorm_backward<T>(gdx.p, gdw.p, gdb.p, gdy.p, gx.p, gw.p, gmean.p, grstd.p, N, C);
  cu::layernorm_backward<T>(nullptr, nullptr, gdb2.p, gdy.p, gx.p, gw.p, gmean.p, grstd.p, N, C);
  const std::string n = "cuda layernorm " + tname<T>();
  expect(n + ": forward", gy.floats(), y, tol<T>());
  expect(n + ": mean", gmean.floats(), mean, kTolF32);
  expect(n + ": rstd", grstd.floats(), rstd, kTolF32);
  expect(n + ": d input (+=)", gdx.floats(), dx, tol<T>());
  expect(n + ": d weight (+=, fp32)", gdw.floats(), dw, tol<T>());
  expect(n + ": d bias (+=, fp32)", gdb.floats(), db, tol<T>());
  expect(n + ": d bias alone (null dinp, dw)", gdb2.floats(), db_only, tol<T>());
}

template <typename T>
void check_l2norm() {
  const double eps = 1e-6;
  const std::string n = "cuda l2norm " + tname<T>();
  {
    const int64_t R = 37, C = 300;
    auto x = as<T>(randf(R * C, rng)), dy = randf(R * C, rng), dx0 = randf(R * C, rng, 0.1);
    std::vector<float> y(R * C), dx = dx0;
    cpu::l2norm_rows_forward<float>(y.data(), x.data(), R, C, eps);
    cpu::l2norm_rows_backward<float>(dx.data(), dy.data(), x.data(), R, C, eps);
    Dev<T> gx(x), gy(R * C);
    Dev<float> gdy(dy), gdx(dx0);
    cu::l2norm_rows_forward<T>(gy.p, gx.p, R, C, eps);
    cu::l2norm_rows_backward<T>(gdx.p, gdy.p, gx.p, R, C, eps);
    expect(n + ": forward", gy.floats(), y, tol<T>());
    expect(n + ": d input (+=, fp32)", gdx.floats(), dx, tol<T>());
  }
  {  // one row with ||x|| <= eps: the clamped branch (checked alone, its gradient is ~1/eps)
    const int64_t C = 300;
    auto x = as<T>(randf(C, rng, 1e-9)), dy = randf(C, rng), dx0 = randf(C, rng, 0.1);
    std::vector<float> y(C), dx = dx0;
    cpu::l2norm_rows_forward<float>(y.data(), x.data(), 1, C, eps);
    cpu::l2norm_rows_backward<float>(dx.data(), dy.data(), x.data(), 1, C, eps);
    Dev<T> gx(x), gy(C);
    Dev<float> gdy(dy), gdx(dx0);
    cu::l2norm_rows_forward<T>(gy.p, gx.p, 1, C, eps);
    cu::l2norm_rows_backward<T>(gdx.p, gdy.p, gx.p, 1, C, eps);
    expect(n + ": forward, clamped row (||x|| <= eps)", gy.floats(), y, tol<T>());
    expect(n + ": d input, clamped row", gdx.floats(), dx, tol<T>());
  }
}

template <typename T>
void check_gelu() {
  const int64_t n = 10001;
  auto x = as<T>(randf(n, rng, 3.0)), dy = as<T>(randf(n, rng));
  const float tails[] = {-30.f, -12.f, -9.f, -5.f, 0.f, 5.f, 12.f, 30.f};  // saturated both ways
  for (size_t i = 0; i < std::size(tails); i++) x[i] = tails[i];
  auto dx0 = as<T>(randf(n, rng, 0.1));
  std::vector<float> y(n), dx = dx0;
  cpu::gelu_tanh_forward<float>(y.data(), x.data(), n);
  cpu::gelu_tanh_backward<float>(dx.data(), dy.data(), x.data(), n);
  Dev<T> gx(x), gdy(dy), gy(n), gdx(dx0);
  cu::gelu_tanh_forward<T>(gy.p, gx.p, n);
  cu::gelu_tanh_backward<T>(gdx.p, gdy.p, gx.p, n);
  expect("cuda gelu " + tname<T>() + ": forward", gy.floats(), y, tol<T>());
  expect("cuda gelu " + tname<T>() + ": d input (+=)", gdx.floats(), dx, tol<T>());
}

struct AlibiCase {
  int64_t B, Tq, Tk, p0;
  int nh, hd;
  bool cache;  // k, v in a separate cache (rows of H, head stride hd); else Bloom's fused rows
};

// q always in Bloom's fused query_key_value rows (stride 3H, head h at column h*3*hd); k = q + hd and
// v = q + 2*hd there too, or in a KV cache of stride H and head stride hd.
template <typename T>
void check_alibi(const AlibiCase& c, bool check_determinism = false) {
  const int64_t H = int64_t(c.nh) * c.hd, ldq = 3 * H, qhs = 3 * int64_t(c.hd);
  const int64_t ldkv = c.cache ? H : ldq, kvhs = c.cache ? c.hd : qhs;
  const int64_t koff = c.cache ? 0 : c.hd, voff = c.cache ? 0 : 2 * c.hd;
  auto qkv = as<T>(randf(c.B * c.Tq * ldq, rng));
  auto kc = as<T>(randf(c.cache ? c.B * c.Tk * H : 0, rng)), vc = as<T>(randf(c.cache ? c.B * c.Tk * H : 0, rng));
  auto dout = as<T>(randf(c.B * c.Tq * H, rng));
  auto dqkv0 = as<T>(randf(qkv.size(), rng, 0.1)), dkc0 = as<T>(randf(kc.size(), rng, 0.1)),
       dvc0 = as<T>(randf(vc.size(), rng, 0.1));
  std::vector<float> slopes(c.nh);
  cpu::alibi_slopes<float>(slopes.data(), c.nh);

  std::vector<float> out(c.B * c.Tq * H), clse(c.B * c.nh * c.Tq), dqkv = dqkv0, dkc = dkc0, dvc = dvc0;
  const float* hk = c.cache ? kc.data() : qkv.data() + koff;
  const float* hv = c.cache ? vc.data() : qkv.data() + voff;
  float* hdk = c.cache ? dkc.data() : dqkv.data() + koff;
  float* hdv = c.cache ? dvc.data() : dqkv.data() + voff;
  cpu::alibi_attention_forward<float>(out.data(), clse.data(), qkv.data(), ldq, qhs, hk, hv, ldkv, kvhs, slopes.data(),
                                      c.B, c.Tq, c.Tk, c.p0, c.nh, c.hd);
  cpu::alibi_attention_backward<float>(dqkv.data(), hdk, hdv, dout.data(), out.data(), clse.data(), qkv.data(), ldq,
                                       qhs, hk, hv, ldkv, kvhs, slopes.data(), c.B, c.Tq, c.Tk, c.p0, c.nh, c.hd);
  const auto lse = lse_ref(qkv, ldq, c.cache ? kc : qkv, koff, ldkv, c.B, c.Tq, c.Tk, c.p0, c.nh, c.nh, c.hd, qhs,
                           kvhs, slopes.data());

  Dev<T> gqkv(qkv), gkc(kc), gvc(vc), gdout(dout), gout(out.size()), gdqkv(dqkv0), gdkc(dkc0), gdvc(dvc0);
  Dev<float> glse(lse.size()), gslopes(slopes);
  const T* gk = c.cache ? gkc.p : gqkv.p + koff;
  const T* gv = c.cache ? gvc.p : gqkv.p + voff;
  auto backward = [&](Dev<T>& dq, Dev<T>& dk, Dev<T>& dv) {
    cu::alibi_attention_backward<T>(dq.p, c.cache ? dk.p : dq.p + koff, c.cache ? dv.p : dq.p + voff, gdout.p, gout.p,
                                    glse.p, gqkv.p, ldq, qhs, gk, gv, ldkv, kvhs, gslopes.p, c.B, c.Tq, c.Tk, c.p0,
                                    c.nh, c.hd);
  };
  cu::alibi_attention_forward<T>(gout.p, glse.p, gqkv.p, ldq, qhs, gk, gv, ldkv, kvhs, gslopes.p, c.B, c.Tq, c.Tk,
                                 c.p0, c.nh, c.hd);
  backward(gdqkv, gdkc, gdvc);
  char name[160];
  std::snprintf(name, sizeof name, "cuda alibi %s %s hd %d B %lld Tq %lld Tk %lld p0 %lld nh %d", tname<T>().c_str(),
                c.cache ? "kv-cache" : "fused qkv", c.hd, (long long)c.B, (long long)c.Tq, (long long)c.Tk,
                (long long)c.p0, c.nh);
  const std::string n = name;
  expect(n + ": out", gout.floats(), out, tol<T>());
  expect(n + ": lse", glse.floats(), lse, kTolF32);
  if (c.cache) {
    expect(n + ": dq (+=)", gdqkv.floats(), dqkv, tol<T>());
    auto gkv = gdkc.floats(), wkv = dkc;
    const auto gvv = gdvc.floats();
    gkv.insert(gkv.end(), gvv.begin(), gvv.end());
    wkv.insert(wkv.end(), dvc.begin(), dvc.end());
    expect(n + ": dk dv (+=, cache rows)", gkv, wkv, tol<T>());
  } else {
    expect(n + ": dq dk dv (+=, fused rows)", gdqkv.floats(), dqkv, tol<T>());
  }
  if (check_determinism) {
    Dev<T> gdqkv2(dqkv0), gdkc2(dkc0), gdvc2(dvc0);
    backward(gdqkv2, gdkc2, gdvc2);
    const bool same = gdqkv2.bytes() == gdqkv.bytes() && gdkc2.bytes() == gdkc.bytes() && gdvc2.bytes() == gdvc.bytes();
    report(n + ": backward repeatable bit for bit", same ? 0.0 : 1.0, 0.5);
  }
}

template <typename T>
void check_alibi_all() {
  // Small shapes: these run the generic kernels (one warp per row), slow under the emulator.
  check_alibi<T>({2, 23, 23, 0, 6, 8, false}, true);  // fused rows, 6 heads (slopes past the power of 2)
  check_alibi<T>({1, 17, 17, 0, 6, 64, false});       // fused rows, a tiled head dim (still generic)
  check_alibi<T>({2, 7, 19, 12, 6, 8, true});         // KV cache: a 7-token chunk after 12 cached tokens
  check_alibi<T>({1, 1, 30, 29, 6, 64, true});        // one decode step
}

// adamw_update_copy: the same update as adamw_update (bit for bit) plus the bf16 copy of each p.
void check_adamw_copy() {
  const int64_t n = 10007;
  const auto p = randf(n, rng);
  const std::vector<float> zero(n, 0.f);
  Dev<float> ap(p), am(zero), av(zero), bp(p), bm(zero), bv(zero), gg(n);
  Dev<bf16> pc(n);
  for (int64_t t = 1; t <= 3; t++) {
    gg.upload(randf(n, rng));
    cu::adamw_update(ap.p, gg.p, am.p, av.p, n, 1e-3, 0.9, 0.999, 1e-8, 0.01, t, 0.5);
    cu::adamw_update_copy(bp.p, pc.p, gg.p, bm.p, bv.p, n, 1e-3, 0.9, 0.999, 1e-8, 0.01, t, 0.5);
  }
  report("cuda adamw_update_copy: p, m, v = adamw_update's (elements differing)",
         bits_differ(bp.get(), ap.get()) + bits_differ(bm.get(), am.get()) + bits_differ(bv.get(), av.get()), 0.5);
  report("cuda adamw_update_copy: p_copy = bf16(p) (elements differing)", bits_differ(pc.get(), to_bf16(bp.get())),
         0.5);
}

}  // namespace

int run_bench(int argc, char** argv);  // bench_kernels.cu
int run_model_checks(const std::string& only_arch);  // test_models.cu: whole models against the CPU backend
int run_step_bench(int argc, char** argv);  // bench_step.cu: one 7B-shaped LoRA step, timed
void run_paged_checks();  // test_paged.cu: paged AdamW and its page plan
void run_nf4_quant_checks();  // test_nf4_quant.cu: NF4 quantization against the CPU's
void run_qlora_checks();  // test_qlora.cu: the backend's NF4 tensors, NF4 linear and 8-bit AdamW against the CPU's

int main(int argc, char** argv) {
  sft::register_cuda_backend();
  std::string err;
  const int devices = cu::device_count(&err);
  if (devices == 0) {
    std::printf("SKIP: no CUDA device (%s)\n", err.empty() ? "none found" : err.c_str());
    return 0;
  }
  for (int i = 1; i < argc; i++) {
    if (std::strcmp(argv[i], "--bench") == 0) return run_bench(argc, argv);
    if (std::strcmp(argv[i], "--step") == 0) return run_step_bench(argc, argv);
  }
  std::string only, arch;
  bool large = true;
  for (int i = 1; i < argc; i++) {
    if (!std::strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
    if (!std::strcmp(argv[i], "--no-large")) large = false;
    if (!std::strcmp(argv[i], "--arch") && i + 1 < argc) arch = argv[++i];
  }
  const char* families[] = {"rmsnorm", "rope",   "swiglu",    "embedding", "cross-entropy", "adamw",
                            "nf4",     "gemm",   "attention", "linear",    "tensor",        "dropout",
                            "layernorm", "l2norm", "gelu",    "alibi",     "mma",       "paged",
                            "qlora",   "models"};
  if (!only.empty() && std::none_of(std::begin(families), std::end(families), [&](const char* f) { return only == f; })) {
    std::printf("unknown --only %s (one of:", only.c_str());
    for (const char* f : families) std::printf(" %s", f);
    std::printf(")\n");
    return 2;
  }
  auto want = [&](const char* family) { return only.empty() || only == family; };
  cudaDeviceProp prop;
  SFT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  if (std::strstr(prop.name, "emulation")) large = false;  // the CPU emulator: keep it quick
  std::printf("device: %s (%d device(s)); GEMM via %s\n", prop.name, devices,
              cu::gemm_uses_cublaslt() ? "cuBLASLt" : "the tiled fallback kernel");
  try {
    if (want("rmsnorm")) check_rmsnorm<float>(), check_rmsnorm<bf16>();
    if (want("rope")) check_rope<float>(), check_rope<bf16>();
    if (want("swiglu")) check_swiglu<float>(), check_swiglu<bf16>();
    if (want("embedding")) check_embedding<float>(), check_embedding<bf16>();
    if (want("cross-entropy")) check_cross_entropy<float>(), check_cross_entropy<bf16>();
    if (want("adamw")) check_adamw(), check_adamw_copy();
    if (want("paged")) run_paged_checks();
    if (want("nf4")) check_nf4(), run_nf4_quant_checks();
    if (want("qlora")) run_qlora_checks();
    if (want("gemm")) {
      check_col_major_mapping();
      check_gemm<float, float>(false);
      check_gemm<bf16, bf16>(false);
      check_gemm<bf16, float>(false);
      if (cu::gemm_uses_cublaslt()) {
        check_gemm<float, float>(true);
        check_gemm<bf16, float>(true);
      }
    }
    if (want("mma")) check_mma();
    if (want("attention")) check_attention_all<float>(large), check_attention_all<bf16>(large), check_attention_mma();
    if (want("linear")) check_linear<float>(), check_linear<bf16>();
    if (want("tensor")) check_tensor();
    if (want("dropout")) check_dropout<float>(), check_dropout<bf16>();
    if (want("layernorm")) check_layernorm<float>(), check_layernorm<bf16>();
    if (want("l2norm")) check_l2norm<float>(), check_l2norm<bf16>();
    if (want("gelu")) check_gelu<float>(), check_gelu<bf16>();
    if (want("alibi")) check_alibi_all<float>(), check_alibi_all<bf16>();
    if (want("models")) run_model_checks(arch);
    SFT_CUDA_CHECK(cudaDeviceSynchronize());
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    failures++;
  }
#ifdef SFT_CUDA_EMULATE
  // Every Dev<> buffer is gone by now and the launchers free their scratch, so anything still
  // allocated is a leak. The emulator's exit check would also fail the run; this names it here.
  if (sft_emu::live_device_allocations() || sft_emu::live_pinned_allocations()) {
    std::printf("FAIL emulator: %zu device allocation(s) (%zu bytes) and %zu pinned allocation(s) still live:\n",
                sft_emu::live_device_allocations(), sft_emu::live_device_bytes(), sft_emu::live_pinned_allocations());
    sft_emu::report_live_allocations(stdout);
    failures++;
  }
#endif
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
  return failures ? 1 : 0;
}
