// The kernels every build has: 16-byte vectors, which every x86-64 (SSE2) and arm64 (NEON) CPU runs.
// CMakeLists.txt compiles this file for the architecture's baseline, whatever the engine's flags.
#define SFT_VEC_BYTES 16
#define SFT_MR 6
#define SFT_KERNELS_NAME "portable"
#include "cpu/kernels_impl.h"

namespace sft::cpu {
const Kernels* portable_kernels() { return &kTable; }
}  // namespace sft::cpu
