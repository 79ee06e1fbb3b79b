// The CUDA backend's QLoRA and 8-bit AdamW entry points (cuda/backend.h) against the CPU backend's
// (the oracle), through the backend contract the model code calls:
//  - nf4_quantize of a matrix in row segments (a fused q/k/v), from host floats in chunks: the
//    packed codes, the double-quantized scales (codes, per-256 scales, offset) or the plain fp32
//    scales equal the CPU's Nf4Weight bit for bit; nf4_bytes is what nf4_bytes_for planned;
//  - nf4_decode_rows of a row range across segments = the CPU's decode_row, bit for bit;
//  - linear_forward_nf4 / linear_backward_nf4 (dequantize into the workspace, then the GEMM) =
//    the CPU's NF4 GEMM: fp32 within 1e-5, bf16 within 1e-2 (norm-wise);
//  - adamw_update_8bit over 5 steps = the CPU's (bitsandbytes' blockwise dynamic maps).
// Run by test_kernels.cu's main (--only qlora). NOT A GPU RESULT under the emulator.
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../native/check.h"
#include "cpu/backend.h"
#include "cuda/backend.h"
#include "cuda_test_util.cuh"

namespace {

namespace cpu = sft::cpu;
using sft::cuda::bf16;

template <typename E>
std::vector<E> down(const E* p, size_t n) {
  std::vector<E> h(n);
  if (n) SFT_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(E), cudaMemcpyDeviceToHost));
  return h;
}

template <typename E>
bool same(const std::vector<E>& a, const std::vector<E>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(E)) == 0);
}

// A [rows, cols] matrix in three row segments, one of them longer than the quantizer's 4 Mi-element
// chunk when `big` (the chunk boundaries must not show).
void check_quantize(bool double_quant, bool big) {
  const int64_t cols = big ? 4099 : 515;  // odd: a segment's last byte holds one weight
  const std::vector<int64_t> seg_rows = big ? std::vector<int64_t>{3, 1100, 5} : std::vector<int64_t>{7, 33, 2};
  int64_t rows = 0;
  std::vector<sft::CudaBackend<float>::Segment> gsegs;
  std::vector<sft::CpuBackend<float>::Segment> csegs;
  for (int64_t r : seg_rows) gsegs.push_back({rows, r}), csegs.push_back({rows, r}), rows += r;
  std::mt19937_64 rng(31 + big);
  std::vector<float> w = randf(rows * cols, rng, 0.05);
  for (int64_t i = 0; i < 64 * 5; i++) w[size_t(cols * 8 + i)] = 0.f;  // zero blocks inside a segment
  sft::CpuBackend<float> cb;
  sft::CudaBackend<float> gb;
  auto cq = cb.nf4_quantize(w.data(), rows, cols, csegs, double_quant);
  auto gq = gb.nf4_quantize(w.data(), rows, cols, gsegs, double_quant);
  bool bytes = gq->parts.size() == cq->segments.size();
  size_t planned = 0;
  for (int64_t r : seg_rows) planned += sft::CudaBackend<float>::nf4_bytes_for(r * cols, double_quant);
  for (size_t s = 0; bytes && s < cq->segments.size(); s++) {
    const cpu::Nf4Tensor& t = cq->segments[s].t;
    const auto& pt = gq->parts[s];
    const size_t n = size_t(t.numel), blocks = (n + 63) / 64;
    bytes = bytes && pt.row0 == cq->segments[s].row0 && pt.rows == cq->segments[s].rows;
    bytes = bytes && same(down(pt.packed, t.packed.size()), t.packed);
    if (double_quant) {
      bytes = bytes && same(down(pt.absmax_q, t.absmax_q.size()), t.absmax_q) && same(down(pt.absmax2, t.absmax2.size()), t.absmax2);
      bytes = bytes && std::memcmp(&pt.offset, &t.offset, 4) == 0 && same(down(pt.offset_dev, 1), std::vector<float>{t.offset});
    } else {
      bytes = bytes && same(down(pt.absmax, blocks), t.absmax);
    }
  }
  const std::string n = std::string("cuda nf4_quantize ") + (double_quant ? "double quant" : "plain") + ", " +
                        std::to_string(rows) + "x" + std::to_string(cols) + " in 3 segments" + (big ? " (> one 4 Mi chunk)" : "");
  report(n + ": codes and scales = CPU's, bit for bit", bytes ? 0.0 : 1.0, 0.5);
  report(n + ": nf4_bytes = nf4_bytes_for's plan", sft::CudaBackend<float>::nf4_bytes(*gq) == planned ? 0.0 : 1.0, 0.5);
  // Rows 5 .. rows-1: across the segment boundaries, starting mid-segment.
  const int64_t r0 = 5, nr = rows - 5;
  std::vector<float> got(size_t(nr * cols)), want(size_t(nr * cols));
  gb.nf4_decode_rows(got.data(), *gq, r0, nr);
  cb.nf4_decode_rows(want.data(), *cq, r0, nr);
  report(n + ": nf4_decode_rows(5, rows - 5) = CPU's, bit for bit", same(got, want) ? 0.0 : 1.0, 0.5);
}

// y = x W^T (+ accumulate) and dx += dy W with W in NF4, against the CPU backend on the same codes.
template <typename T>
void check_linear_nf4() {
  const int64_t M = 37, K = 130, N = 75;
  std::mt19937_64 rng(41);
  const std::vector<float> w = randf(N * K, rng, 0.1);
  const std::vector<float> x = as<T>(randf(M * K, rng)), dy = as<T>(randf(M * N, rng)), y0 = as<T>(randf(M * N, rng)),
                           dx0 = as<T>(randf(M * K, rng));
  sft::CpuBackend<float> cb;
  sft::CudaBackend<T> gb;
  auto cq = cb.nf4_quantize(w.data(), N, K, {{0, 20}, {20, N - 20}}, true);
  auto gq = gb.nf4_quantize(w.data(), N, K, {{0, 20}, {20, N - 20}}, true);
  std::vector<float> y = y0, dx = dx0;
  cb.linear_forward_nf4(y.data(), x.data(), *cq, M, K, N, true);
  cb.linear_backward_nf4(dx.data(), dy.data(), *cq, M, K, N);
  Dev<T> gx(x), gdy(dy), gy(y0), gdx(dx0);
  gb.linear_forward_nf4(gy.p, gx.p, *gq, M, K, N, true);
  gb.linear_backward_nf4(gdx.p, gdy.p, *gq, M, K, N);
  gb.sync();
  const bool f32 = std::is_same<T, float>::value;
  const std::string n = std::string("cuda linear_forward_nf4 / _backward ") + (f32 ? "fp32" : "bf16") + " vs cpu, 2 segments";
  expect(n + ": y += x W^T", gy.floats(), y, f32 ? 1e-5 : 1e-2);
  expect(n + ": dx += dy W", gdx.floats(), dx, f32 ? 1e-5 : 1e-2);
}

// Five 8-bit AdamW steps on one tensor of 5 blocks and a partial one (zero blocks: scale 0),
// gradient scale and weight decay on. The fp32 update differs from the CPU's only in rounding
// (contraction into FMAs), so a code may land on the other side of a midpoint: what is compared is
// the parameters (within 1e-6), the block scales (within 1e-5) and the share of codes equal (>= 99 %).
void check_adamw_8bit() {
  const int64_t n = 256 * 5 + 37, blocks = 6;
  std::mt19937_64 rng(43);
  std::vector<float> p = randf(n, rng, 0.5);
  sft::CpuBackend<float> cb;
  sft::CudaBackend<float> gb;
  std::vector<uint8_t> m8(size_t(n), cb.zero_code_signed()), v8(size_t(n), cb.zero_code_unsigned());
  std::vector<float> ma(size_t(blocks), 0.f), va(size_t(blocks), 0.f);
  Dev<float> gp(p), gg(static_cast<size_t>(n)), gma(ma), gva(va);
  Dev<uint8_t> gm8(m8), gv8(v8);
  const bool codes_zero = gb.zero_code_signed() == cb.zero_code_signed() && gb.zero_code_unsigned() == cb.zero_code_unsigned();
  for (int64_t t = 1; t <= 5; t++) {
    std::vector<float> g = randf(n, rng, 0.1);
    for (int64_t i = 256 * 2; i < 256 * 3; i++) g[size_t(i)] = 0.f;  // a block that never moves
    gg.upload(g);
    cb.adamw_update_8bit(p.data(), g.data(), m8.data(), ma.data(), v8.data(), va.data(), n, 1e-2, 0.9, 0.999, 1e-8, 0.01, t, 0.5);
    gb.adamw_update_8bit(gp.p, gg.p, gm8.p, gma.p, gv8.p, gva.p, n, 1e-2, 0.9, 0.999, 1e-8, 0.01, t, 0.5);
  }
  gb.sync();
  const std::vector<uint8_t> gm = gm8.get(), gv = gv8.get();
  int64_t equal = 0;
  for (int64_t i = 0; i < n; i++) equal += (gm[size_t(i)] == m8[size_t(i)]) + (gv[size_t(i)] == v8[size_t(i)]);
  const std::string name = "cuda adamw_update_8bit vs cpu, 5 steps, 1317 elements (6 blocks, one all-zero gradient)";
  report(name + ": zero codes of the maps agree", codes_zero ? 0.0 : 1.0, 0.5);
  expect(name + ": parameters", gp.get(), p, 1e-6);
  expect(name + ": m scales", gma.get(), ma, 1e-5);
  expect(name + ": v scales", gva.get(), va, 1e-5);
  report(name + ": share of m and v codes not equal", 1.0 - double(equal) / double(2 * n), 0.01);
}

}  // namespace

void run_qlora_checks() {
  for (bool dq : {true, false}) check_quantize(dq, false);
  check_quantize(true, true);
  check_linear_nf4<float>();
  check_linear_nf4<bf16>();
  check_adamw_8bit();
}
