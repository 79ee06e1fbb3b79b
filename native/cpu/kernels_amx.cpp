// avx512bf16's kernels with the bf16 GEMM micro-kernel on AMX tiles (AMX-TILE + AMX-BF16: Sapphire
// Rapids and later Xeons): TDPBF16PS multiplies 16 x 32 by 32 x 16 bf16 in one instruction, 16 times
// vdpbf16ps's work. Everything else (fp32 GEMM, GEMVs, skinny, dropout) is avx512bf16's, compiled
// again here so that one table serves the whole path. CMakeLists.txt adds -mamx-tile -mamx-bf16 for
// this file only; isa.cpp offers it only where CPUID reports AMX and the OS grants the tile state.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__FMA__) && \
    defined(__AVX512BF16__) && defined(__AMX_TILE__) && defined(__AMX_BF16__)
#define SFT_VEC_BYTES 64
#define SFT_MR 12
#define SFT_KERNELS_NAME "amx"
#define SFT_BF16_DP 1
#define SFT_AMX 1
#include "cpu/kernels_impl.h"

namespace sft::cpu {
const Kernels* amx_kernels() { return &kTable; }
}  // namespace sft::cpu
#else
#include "cpu/kernels.h"
namespace sft::cpu {
const Kernels* amx_kernels() { return nullptr; }
}  // namespace sft::cpu
#endif
