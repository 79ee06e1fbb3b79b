// AVX-512 (F, BW, VL) kernels (Skylake-SP and later Xeons, Zen 4 and later). CMakeLists.txt adds the
// flags for this file only; isa.cpp calls them only where the CPU (and OS) support them.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__FMA__)
#define SFT_VEC_BYTES 64
#define SFT_MR 12  // 24 zmm accumulators + 2 of B + 1 broadcast of the 32 registers
#define SFT_KERNELS_NAME "avx512"
#include "cpu/kernels_impl.h"

namespace sft::cpu {
const Kernels* avx512_kernels() { return &kTable; }
}  // namespace sft::cpu
#else
#include "cpu/kernels.h"
namespace sft::cpu {
const Kernels* avx512_kernels() { return nullptr; }
}  // namespace sft::cpu
#endif
