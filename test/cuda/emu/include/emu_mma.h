// CPU emulation of the warp-level matrix instructions native/cuda/mma.cuh wraps: mma.sync
// m16n8k16 bf16 -> fp32, ldmatrix m8n8 .x4 (and .trans), cp.async with groups. The fragment
// layouts are the PTX ISA's ("Matrix Fragments for mma.m16n8k16 with floating point type" and
// "Warp-level matrix load instruction: ldmatrix"), written out below as the ISA states them, with
// groupID = lane >> 2 and threadID_in_group = lane % 4. A register holding two bf16 holds the
// lower-numbered element in its low 16 bits. Every lane of the warp must take part
// (warp_collective fails otherwise), as the instructions' .sync.aligned requires.
//
// test_kernels.cu checks these against scalar matrix products (check_mma), the same test that
// checks the inline PTX on a GPU: both passing means the emulation and the hardware agree.
#pragma once
#include <cstdint>
#include <cstring>

#include "cuda_bf16.h"
#include "cuda_runtime.h"

namespace sft_emu {
namespace mma_detail {

inline float bf16_half(uint32_t reg, int high) {
  const uint16_t bits = uint16_t(high ? reg >> 16 : reg & 0xffffu);
  __nv_bfloat16 h;
  h.x = bits;
  return __bfloat162float(h);
}

// Element i of a lane's fragment: row and column in the matrix (PTX ISA, m16n8k16, .bf16).
inline int a_row(int lane, int i) { return (i < 2 || (i >= 4 && i < 6)) ? (lane >> 2) : (lane >> 2) + 8; }
inline int a_col(int lane, int i) { return (lane % 4) * 2 + (i & 1) + (i >= 4 ? 8 : 0); }
inline int b_row(int lane, int i) { return (lane % 4) * 2 + (i & 1) + (i >= 2 ? 8 : 0); }
inline int b_col(int lane, int) { return lane >> 2; }
inline int c_row(int lane, int i) { return (lane >> 2) + (i >= 2 ? 8 : 0); }
inline int c_col(int lane, int i) { return (lane % 4) * 2 + (i & 1); }

struct MmaLane {
  uint32_t a[4], b[2];
  float acc[4];  // C in, D out
};

inline void mma_run(void* const* lanes) {
  float A[16][16], B[16][8], C[16][8];
  for (int l = 0; l < 32; l++) {
    const MmaLane& f = *static_cast<const MmaLane*>(lanes[l]);
    for (int i = 0; i < 8; i++) A[a_row(l, i)][a_col(l, i)] = bf16_half(f.a[i / 2], i & 1);
    for (int i = 0; i < 4; i++) B[b_row(l, i)][b_col(l, i)] = bf16_half(f.b[i / 2], i & 1);
    for (int i = 0; i < 4; i++) C[c_row(l, i)][c_col(l, i)] = f.acc[i];
  }
  for (int l = 0; l < 32; l++) {
    MmaLane& f = *static_cast<MmaLane*>(lanes[l]);
    for (int i = 0; i < 4; i++) {
      const int r = c_row(l, i), c = c_col(l, i);
      float s = C[r][c];
      for (int k = 0; k < 16; k++) s += A[r][k] * B[k][c];  // exact products, fp32 sums
      f.acc[i] = s;
    }
  }
}

struct LdmLane {
  const void* row;  // this lane's row address: row (lane % 8) of matrix (lane / 8)
  uint32_t r[4];
};

// Each of the 4 matrices is 8 rows of 8 b16, row j of matrix m at lane 8m + j's address. Without
// .trans lane l receives row l/4, elements 2(l%4) and 2(l%4)+1 of each matrix; with .trans the
// matrix is read column-major: elements (2(l%4), l/4) and (2(l%4)+1, l/4).
template <bool Trans>
void ldmatrix_run(void* const* lanes) {
  uint16_t M[4][8][8];
  for (int m = 0; m < 4; m++)
    for (int j = 0; j < 8; j++) {
      const void* p = static_cast<const LdmLane*>(lanes[8 * m + j])->row;
      if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
        kernel_fail("ldmatrix row address is not 16-byte aligned");
      if (!in_dynamic_smem(p, 16)) kernel_fail("ldmatrix row address is not inside the launch's dynamic shared memory");
      std::memcpy(M[m][j], p, 16);
    }
  for (int l = 0; l < 32; l++) {
    LdmLane& f = *static_cast<LdmLane*>(lanes[l]);
    const int g = l >> 2, t = l % 4;
    for (int m = 0; m < 4; m++) {
      const uint16_t lo = Trans ? M[m][2 * t][g] : M[m][g][2 * t];
      const uint16_t hi = Trans ? M[m][2 * t + 1][g] : M[m][g][2 * t + 1];
      f.r[m] = uint32_t(lo) | (uint32_t(hi) << 16);
    }
  }
}

enum Op { kMma = 1, kLdmatrix = 2, kLdmatrixTrans = 3 };

}  // namespace mma_detail

// acc (this lane's C/D fragment) += A B.
inline void mma_bf16_16x8x16(float* acc, const uint32_t* a, const uint32_t* b) {
  mma_detail::MmaLane f;
  std::memcpy(f.a, a, sizeof f.a);
  std::memcpy(f.b, b, sizeof f.b);
  std::memcpy(f.acc, acc, sizeof f.acc);
  warp_collective(mma_detail::kMma, &f, mma_detail::mma_run);
  std::memcpy(acc, f.acc, sizeof f.acc);
}

template <bool Trans>
inline void ldmatrix_x4(uint32_t* r, const void* row) {
  mma_detail::LdmLane f{row, {0, 0, 0, 0}};
  warp_collective(Trans ? mma_detail::kLdmatrixTrans : mma_detail::kLdmatrix, &f, mma_detail::ldmatrix_run<Trans>);
  std::memcpy(r, f.r, sizeof f.r);
}

}  // namespace sft_emu
