// AVX-512 kernels plus the bf16 GEMM micro-kernel on vdpbf16ps (AVX512_BF16: Cooper Lake, Sapphire
// Rapids and later Xeons, Zen 4 and later). The fp32 kernels are avx512's, compiled again here so that
// one table serves the whole path. CMakeLists.txt adds -mavx512bf16 for this file only; isa.cpp calls
// it only where CPUID reports AVX512_BF16 (and the OS the zmm state).
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__FMA__) && defined(__AVX512BF16__)
#define SFT_VEC_BYTES 64
#define SFT_MR 12  // 24 zmm accumulators + 2 of B + 1 broadcast of the 32 registers
#define SFT_KERNELS_NAME "avx512bf16"
#define SFT_BF16_DP 1
#include "cpu/kernels_impl.h"

namespace sft::cpu {
const Kernels* avx512bf16_kernels() { return &kTable; }
}  // namespace sft::cpu
#else
#include "cpu/kernels.h"
namespace sft::cpu {
const Kernels* avx512bf16_kernels() { return nullptr; }
}  // namespace sft::cpu
#endif
