// What the ops share to run on every element type of the CPU backend (cpu/ops.h: T = float,
// double, or bf16 storage with Acc<T> = float math): bulk conversions between bf16 and float, and
// one GEMM entry that sends each type to its kernels.
#pragma once
#include <cstdint>
#include <type_traits>

#include "cpu/bf16.h"
#include "cpu/gemm.h"
#include "cpu/ops.h"

namespace sft::cpu {

// dst[i] = float(src[i]): a plain loop the compiler turns into vector widening shifts (exact).
inline void widen(float* __restrict dst, const bf16* __restrict src, int64_t n) {
  for (int64_t i = 0; i < n; i++) dst[i] = float(src[i]);
}
// dst[i] = bf16(src[i]), bit for bit bf16.h's rounding (nearest even): AVX512-BF16's conversion
// where the CPU has it, else the inline rounding vectorised (cpu/convert.cpp).
void narrow(bf16* dst, const float* src, int64_t n);

// bf16 elementwise ops run their fp32 loop on slices of this many elements, widened into (and
// narrowed from) fp32 buffers on the stack: the conversions stay in bulk, SIMD-friendly loops.
constexpr int64_t kSlice = 512;

// C[m, n] = beta C + alpha sum_k opA[m, k] opB[n, k] (gemm's conventions, cpu/gemm.h) for T's
// operands: float and double through gemm<T> (C is T), bf16 through gemm_bf16 with fp32
// accumulation (C is float: weight gradients; or bf16: activations, rounded once per element).
template <typename T, typename C>
inline void gemm_t(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const T* A, int64_t lda, const T* B,
                   int64_t ldb, double beta, C* out, int64_t ldc) {
  if constexpr (std::is_same<T, bf16>::value) {
    static_assert(std::is_same<C, float>::value || std::is_same<C, bf16>::value, "bf16 products land in float or bf16");
    gemm_bf16(ta, tb, M, N, K, float(alpha), A, lda, B, ldb, float(beta), out, ldc);
  } else {
    static_assert(std::is_same<C, T>::value, "float and double multiply in one type");
    gemm<T>(ta, tb, M, N, K, T(alpha), A, lda, B, ldb, T(beta), out, ldc);
  }
}

}  // namespace sft::cpu
