// NF4 quantization on the GPU (cuda/quant.cuh) against the CPU quantizer (cpu::nf4_quantize_tensor),
// bit for bit: the packed codes, the double-quantized scales, the offset and the scales compute
// uses, on awkward sizes and blocks (all zeros, absmax ties, values at code midpoints, bf16 input);
// and the dequantization of what the GPU quantized equal to the CPU's. Run by test_kernels.cu's
// main (--only nf4).
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../native/check.h"
#include "cpu/quant.h"
#include "cuda/quant.cuh"
#include "cuda_test_util.cuh"

namespace {

namespace cu = sft::cuda;
namespace cpu = sft::cpu;
using sft::cuda::bf16;

template <typename E>
bool same_bytes(const std::vector<E>& a, const std::vector<E>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(E)) == 0);
}

// x as the device gets it (T = bf16: the CPU quantizes the same bf16 values, widened).
template <typename T>
void check_one(const std::string& what, std::vector<float> x) {
  x = as<T>(x);
  const int64_t n = int64_t(x.size()), blocks = (n + 63) / 64, groups = (blocks + 255) / 256;
  const cpu::Nf4Tensor t = cpu::nf4_quantize_tensor(x.data(), n, true);
  const cpu::Nf4Tensor t1 = cpu::nf4_quantize_tensor(x.data(), n, false);
  Dev<T> dx(x);
  Dev<uint8_t> packed(static_cast<size_t>((n + 1) / 2)), aq(static_cast<size_t>(blocks));
  Dev<float> absmax(static_cast<size_t>(blocks)), a2(static_cast<size_t>(groups)), offset(1), code(cpu::dynamic_map_signed()),
      out(static_cast<size_t>(n));
  cu::nf4_quantize<T>(packed.p, absmax.p, dx.p, n);
  const bool single = same_bytes(packed.get(), t1.packed) && same_bytes(absmax.get(), t1.absmax);
  cu::nf4_double_quantize(aq.p, a2.p, offset.p, absmax.p, code.p, blocks);
  const std::vector<float> off = offset.get();
  const bool dq = same_bytes(packed.get(), t.packed) && same_bytes(aq.get(), t.absmax_q) && same_bytes(a2.get(), t.absmax2) &&
                  std::memcmp(&off[0], &t.offset, 4) == 0 && same_bytes(absmax.get(), t.absmax);
  std::vector<float> ref(static_cast<size_t>(n));
  cpu::nf4_dequantize(ref.data(), t.packed.data(), t.absmax.data(), n);
  cu::nf4_dequantize<float>(out.p, packed.p, absmax.p, n);
  const bool back = same_bytes(out.get(), ref);
  const std::string name = "cuda nf4 quantize " + std::string(std::is_same<T, bf16>::value ? "bf16" : "fp32") + ", " + what;
  report(name + ": codes and scales = CPU (no double quant)", single ? 0.0 : 1.0, 0.5);
  report(name + ": codes, absmax_q, absmax2, offset, decoded scales = CPU (double quant)", dq ? 0.0 : 1.0, 0.5);
  report(name + ": dequantized = CPU's dequantization", back ? 0.0 : 1.0, 0.5);
}

}  // namespace

void run_nf4_quant_checks() {
  std::mt19937_64 r(23);
  for (int64_t n : {1, 2, 63, 64, 65, 129, 64 * 256, 64 * 256 * 2 + 37}) check_one<float>("n=" + std::to_string(n), randf(n, r, 0.02));
  // Blocks of zeros (absmax 0) between others; a whole tensor of zeros (offset 0, every scale 0).
  std::vector<float> z = randf(64 * 300 + 5, r, 0.05);
  for (int64_t i = 64 * 3; i < 64 * 9; i++) z[size_t(i)] = 0.f;
  for (int64_t i = 64 * 299; i < int64_t(z.size()); i++) z[size_t(i)] = 0.f;
  check_one<float>("zero blocks", z);
  check_one<float>("all zeros", std::vector<float>(1000, 0.f));
  // Ties: +a and -a and repeats of the block's absmax; values exactly at NF4 code midpoints; many
  // blocks with the same absmax (ties in the 8-bit scale codes, centred scales of 0).
  std::vector<float> tie(64 * 520 + 3);
  for (size_t i = 0; i < tie.size(); i++) {
    const int64_t k = int64_t(i % 64);
    const float mid = 0.5f * (cpu::kNF4[(i / 64) % 15] + cpu::kNF4[(i / 64) % 15 + 1]);
    tie[i] = k % 7 == 0 ? (k % 2 ? -0.25f : 0.25f) : k % 5 == 0 ? mid * 0.25f : float(k - 32) / 256.f;
  }
  check_one<float>("absmax ties and code midpoints", tie);
  check_one<bf16>("n=" + std::to_string(64 * 257 + 11), randf(64 * 257 + 11, r, 0.02));
}
