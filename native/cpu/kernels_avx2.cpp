// AVX2 + FMA + F16C kernels (Haswell, Zen and later). CMakeLists.txt adds -mavx2 -mfma -mf16c for this
// file only; isa.cpp calls them only where the CPU has those features.
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define SFT_VEC_BYTES 32
#define SFT_MR 6  // 12 ymm accumulators + 2 of B + 1 broadcast of the 16 registers
#define SFT_KERNELS_NAME "avx2"
#include "cpu/kernels_impl.h"

namespace sft::cpu {
const Kernels* avx2_kernels() { return &kTable; }
}  // namespace sft::cpu
#else
#include "cpu/kernels.h"
namespace sft::cpu {
const Kernels* avx2_kernels() { return nullptr; }
}  // namespace sft::cpu
#endif
