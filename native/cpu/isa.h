// Which SIMD kernels the CPU backend runs, chosen once at run time from the CPU's features (the
// addon may be built on one machine and run on another): the matrix kernels are compiled once per
// instruction set in their own translation units (kernels_*.cpp) and reached through a table.
// SFT_CPU_ISA=portable|avx2|avx512|avx512bf16|amx forces a path (tests run every path the machine has).
// avx512bf16 is avx512 plus the bf16 GEMM on vdpbf16ps (Cooper Lake, Sapphire Rapids, Zen 4 and
// later); amx is avx512bf16 with the bf16 GEMM on AMX tiles (Sapphire Rapids and later Xeons, once
// the OS grants the process the tile state); elsewhere the bf16 GEMM widens its operands into the
// fp32 kernels' panels. fp32 products never use AMX (it multiplies bf16 only).
#pragma once
#include <cstdint>
#include <string>

#include "cpu/kernels.h"

namespace sft::cpu {

enum class Isa { Portable, Avx2, Avx512, Avx512Bf16, Amx };
// Every path, from the most portable to the fastest (the default is the last available one).
constexpr Isa kAllIsas[] = {Isa::Portable, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16, Isa::Amx};

const char* isa_name(Isa isa);
// Whether this build has the kernels of `isa` and this CPU (and OS) can run them.
bool isa_available(Isa isa);
// The best available, or SFT_CPU_ISA's (an unknown or unavailable name throws, saying what this
// CPU offers). Decided on first use.
Isa default_isa();

// Throws when this CPU lacks what the engine outside the kernels was compiled for (the build's
// -march baseline), naming the features and how to rebuild; the addon calls it when it loads.
void check_baseline();

// Whether this CPU has AMX tiles with bf16 (AMX-TILE and AMX-BF16). The amx path also needs the OS
// to grant the process the tile state (Linux 5.16+: arch_prctl ARCH_REQ_XCOMP_PERM), asked once.
bool cpu_has_amx();
bool amx_permitted();

// The kernels in use; set_isa switches them (tests; throws when `isa` is not available).
const Kernels& kernels();
Isa current_isa();
void set_isa(Isa isa);

// Data cache sizes in bytes (sysconf, else /sys, else common defaults): the GEMM's blocking.
struct CacheSizes {
  int64_t l1d, l2, l3;
};
const CacheSizes& cache_sizes();

}  // namespace sft::cpu
