// Which SIMD kernels the CPU backend runs, chosen once at run time from the CPU's features (the
// addon may be built on one machine and run on another): the matrix kernels are compiled once per
// instruction set in their own translation units (kernels_*.cpp) and reached through a table.
// SFT_CPU_ISA=portable|avx2|avx512 forces a path (tests run every path the machine has).
#pragma once
#include <cstdint>
#include <string>

#include "cpu/kernels.h"

namespace sft::cpu {

enum class Isa { Portable, Avx2, Avx512 };

const char* isa_name(Isa isa);
// Whether this build has the kernels of `isa` and this CPU (and OS) can run them.
bool isa_available(Isa isa);
// The best available, or SFT_CPU_ISA's (an unknown or unavailable name throws, saying what this
// CPU offers). Decided on first use.
Isa default_isa();

// Throws when this CPU lacks what the engine outside the kernels was compiled for (the build's
// -march baseline), naming the features and how to rebuild; the addon calls it when it loads.
void check_baseline();

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
