// The CPU backend's bf16 element: storage of frozen weights and activations when a run computes in
// bf16 (CpuBackend<bf16>: T = bf16, G = float). Arithmetic happens in float: a value is widened
// on load (exact) and rounded once on store, to nearest even as PyTorch's c10::BFloat16 and CUDA's
// __float2bfloat16 do, so the CPU and CUDA bf16 paths round alike.
#pragma once
#include <cstdint>
#include <cstring>

namespace sft::cpu {

struct bf16 {
  uint16_t bits;

  bf16() = default;
  explicit bf16(float f) : bits(round(f)) {}
  explicit bf16(double d) : bits(round(float(d))) {}
  operator float() const {
    const uint32_t u = uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }

  // Round to nearest, ties to even; NaN stays a (quiet) NaN of the same sign.
  static uint16_t round(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
    return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
};
static_assert(sizeof(bf16) == 2, "bf16 is two bytes");

}  // namespace sft::cpu
