// One warp running the warp-level matrix instructions of mma.cuh on given 16 x 16 matrices, for
// test_kernels.cu (check_mma): it compares the result with a scalar product, which checks the
// inline PTX on a GPU and the emulator's versions (test/cuda/emu/include/emu_mma.h) on a CPU
// against the same reference.
#pragma once
#include "cuda/types.h"

namespace sft::cuda {

enum class MmaProbe {
  kLdmatrix,       // b is [n][k] (B transposed), loaded with ldmatrix
  kLdmatrixTrans,  // b is [k][n], loaded with ldmatrix .trans
  kFragments,      // b is [k][n]; A and B fragments read from global memory by the PTX ISA's layout
};

// d = A B + c, all 16 x 16 row-major (A: [m][k], c and d fp32 [m][n]), by two m16n8k16 mma.sync.
// Rows of A at or past a_rows are taken as zero (cp.async zero-fill in the ldmatrix modes). a and
// b are device arrays of 256 bf16, c and d of 256 floats.
void mma_probe(float* d, const bf16* a, const bf16* b, const float* c, int a_rows, MmaProbe mode,
               cudaStream_t stream = 0);

}  // namespace sft::cuda
