// The warp-level matrix instructions the tensor-core kernels use (sm_80+), one small function
// each: inline PTX under nvcc, the CPU emulator's versions (test/cuda/emu/include/emu_mma.h) under
// SFT_CUDA_EMULATE. Fragment layouts are the PTX ISA's for mma.m16n8k16 with .bf16 inputs and fp32
// accumulators (g = lane / 4, t = lane % 4):
//   A (16 x 16, row-major), 4 regs of 2 bf16: reg 0 = (g, 2t..2t+1), reg 1 = (g+8, 2t..),
//     reg 2 = (g, 2t+8..), reg 3 = (g+8, 2t+8..);
//   B (16 x 8, "col"), 2 regs: reg 0 = (k 2t..2t+1, n g), reg 1 = (k 2t+8.., n g);
//   C/D (16 x 8) fp32: acc[0..1] = (g, 2t..2t+1), acc[2..3] = (g+8, 2t..2t+1).
// ldmatrix .x4 loads four 8x8 b16 matrices, lanes 8m..8m+7 giving the row addresses of matrix m;
// register m of lane l gets row l/4, columns 2(l%4)..+1 of matrix m (.trans: column l/4, rows
// 2(l%4)..+1), which is exactly an A, B or C fragment piece of the layouts above.
#pragma once
#include <cstdint>

#include "cuda/common.cuh"

#ifdef SFT_CUDA_EMULATE
#include "emu_mma.h"
#endif

namespace sft::cuda {

// Two floats as one register of two bf16 (lo in the low half), rounded to nearest even.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
#ifdef SFT_CUDA_EMULATE
  return uint32_t(__float2bfloat16_rn(lo).x) | (uint32_t(__float2bfloat16_rn(hi).x) << 16);
#else
  return uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(lo))) |
         (uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16);
#endif
}

// acc += A B for one 16x8x16 tile: a = 4 A registers, b = 2 B registers (layouts above).
__device__ __forceinline__ void mma_bf16_16x8x16(float* acc, const uint32_t* a, const uint32_t* b) {
#ifdef SFT_CUDA_EMULATE
  ::sft_emu::mma_bf16_16x8x16(acc, a, b);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// Four 8x8 b16 matrices from shared memory; `row` is this lane's row address (16-byte aligned).
__device__ __forceinline__ void ldmatrix_x4(uint32_t* r, const void* row) {
#ifdef SFT_CUDA_EMULATE
  ::sft_emu::ldmatrix_x4<false>(r, row);
#else
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
#endif
}

// The same, each matrix transposed (read column-major).
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t* r, const void* row) {
#ifdef SFT_CUDA_EMULATE
  ::sft_emu::ldmatrix_x4<true>(r, row);
#else
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
#endif
}

// 16 bytes global -> shared, asynchronously (cp.async.cg: bypasses L1). valid = false reads
// nothing and zero-fills the 16 bytes (src must still be a mapped address: pass any valid one).
__device__ __forceinline__ void cp_async_16(void* smem, const void* src, bool valid) {
#ifdef SFT_CUDA_EMULATE
  ::sft_emu::cp_async(smem, src, 16, valid ? 16 : 0);
#else
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n) : "memory");
#endif
}

// Closes this thread's group of cp.async copies issued since the last commit.
__device__ __forceinline__ void cp_async_commit() {
#ifdef SFT_CUDA_EMULATE
  ::sft_emu::cp_async_commit();
#else
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most N of this thread's committed groups are still in flight. Other threads'
// copies need a __syncthreads after their waits.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#ifdef SFT_CUDA_EMULATE
  ::sft_emu::cp_async_wait(N);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

}  // namespace sft::cuda
