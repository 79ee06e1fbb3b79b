// The kernel behind mma_probe (mma_probe.cuh): one warp, 16 x 16 tiles, two n-tiles of 8.
#include "cuda/mma_probe.cuh"

#include "cuda/common.cuh"
#include "cuda/mma.cuh"

namespace sft::cuda {
namespace {

__global__ void mma_probe_kernel(float* d, const bf16* a, const bf16* b, const float* c, int a_rows, int mode) {
  SFT_DYNAMIC_SMEM(bf16, smem);
  bf16* As = smem;        // [16][16]
  bf16* Bs = smem + 256;  // [16][16]
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  uint32_t af[4], bf[4];
  if (mode != int(MmaProbe::kFragments)) {
    // 16 rows x 2 chunks of 16 bytes per matrix: one chunk of each per lane.
    const int r = lane >> 1, ch = (lane & 1) * 8;
    cp_async_16(As + r * 16 + ch, a + r * 16 + ch, r < a_rows);
    cp_async_16(Bs + r * 16 + ch, b + r * 16 + ch, true);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    // A: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15).
    ldmatrix_x4(af, As + (lane & 15) * 16 + (lane >> 4) * 8);
    if (mode == int(MmaProbe::kLdmatrix))  // rows n, columns k: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, ...)
      ldmatrix_x4(bf, Bs + ((lane & 7) + ((lane >> 4) << 3)) * 16 + ((lane >> 3) & 1) * 8);
    else  // rows k, columns n: (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15)
      ldmatrix_x4_trans(bf, Bs + ((lane & 7) + (((lane >> 3) & 1) << 3)) * 16 + (lane >> 4) * 8);
  } else {
    auto at = [&](int row, int col) { return row < a_rows ? to_f32(a[row * 16 + col]) : 0.f; };
    af[0] = pack_bf16x2(at(g, 2 * t), at(g, 2 * t + 1));
    af[1] = pack_bf16x2(at(g + 8, 2 * t), at(g + 8, 2 * t + 1));
    af[2] = pack_bf16x2(at(g, 2 * t + 8), at(g, 2 * t + 9));
    af[3] = pack_bf16x2(at(g + 8, 2 * t + 8), at(g + 8, 2 * t + 9));
    for (int nt = 0; nt < 2; nt++) {
      const int n = nt * 8 + g;
      bf[2 * nt] = pack_bf16x2(to_f32(b[(2 * t) * 16 + n]), to_f32(b[(2 * t + 1) * 16 + n]));
      bf[2 * nt + 1] = pack_bf16x2(to_f32(b[(2 * t + 8) * 16 + n]), to_f32(b[(2 * t + 9) * 16 + n]));
    }
  }
  float acc[2][4];
  for (int nt = 0; nt < 2; nt++)
    for (int i = 0; i < 4; i++) acc[nt][i] = c[(g + (i >= 2 ? 8 : 0)) * 16 + nt * 8 + 2 * t + (i & 1)];
  mma_bf16_16x8x16(acc[0], af, bf);
  mma_bf16_16x8x16(acc[1], af, bf + 2);
  for (int nt = 0; nt < 2; nt++)
    for (int i = 0; i < 4; i++) d[(g + (i >= 2 ? 8 : 0)) * 16 + nt * 8 + 2 * t + (i & 1)] = acc[nt][i];
}

}  // namespace

void mma_probe(float* d, const bf16* a, const bf16* b, const float* c, int a_rows, MmaProbe mode,
               cudaStream_t stream) {
  SFT_LAUNCH(1, 32, 512 * sizeof(bf16), stream, mma_probe_kernel)(d, a, b, c, a_rows, int(mode));
  SFT_CUDA_CHECK_LAUNCH("mma_probe");
}

}  // namespace sft::cuda
