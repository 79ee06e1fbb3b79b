// Casts, strided copies and accumulations: grid-stride (or column-owned) elementwise kernels,
// memory bound, fp32 in between.
#include "cuda/tensor.cuh"
#include "cuda/common.cuh"
#include "core/random.h"

#include <algorithm>

namespace sft::cuda {
namespace {

constexpr int kThreads = 256;

template <typename Tin, typename Tout>
__global__ void cast_kernel(Tout* out, const Tin* in, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_f32<Tout>(to_f32(in[i]));
}

// 2-D grid: x covers the columns of a row, y strides the rows; a plain element copy (no fp32 round
// trip, so NaN payloads and -0 survive as they are).
template <typename T>
__global__ void copy_2d_kernel(T* dst, int64_t ld_dst, const T* src, int64_t ld_src, int64_t rows, int64_t cols) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) dst[r * ld_dst + c] = src[r * ld_src + c];
}

template <typename TD, typename TS>
__global__ void add_into_kernel(TD* dst, const TS* src, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = from_f32<TD>(to_f32(dst[i]) + to_f32(src[i]));
}

template <typename TD, typename TS>
__global__ void add_rows_into_kernel(TD* dst, const TS* src, int64_t rows, int64_t cols, int64_t ld_src) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += int64_t(gridDim.x) * blockDim.x) {
    float s = to_f32(dst[c]);
    for (int64_t r = 0; r < rows; r++) s += to_f32(src[r * ld_src + c]);
    dst[c] = from_f32<TD>(s);
  }
}

// mean + std * N(0, 1) by Box-Muller on the counter-based generator, in double: element i is the
// CPU's element i (CpuBackend::fill_normal), whatever the grid.
template <typename T>
__global__ void fill_normal_kernel(T* dst, int64_t n, uint64_t key, double mean, double std_) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    double u1 = rng::uniform01_key(key, uint64_t(2 * i));
    u1 = u1 > 1e-300 ? u1 : 1e-300;
    const double u2 = rng::uniform01_key(key, uint64_t(2 * i + 1));
    dst[i] = from_f32<T>(float(mean + std_ * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2)));
  }
}

}  // namespace

template <typename T>
void fill_normal(T* dst, int64_t n, uint64_t key, double mean, double std_, cudaStream_t stream) {
  if (n <= 0) return;
  SFT_LAUNCH(grid_for(n, kThreads), kThreads, 0, stream, fill_normal_kernel<T>)(dst, n, key, mean, std_);
  SFT_CUDA_CHECK_LAUNCH("fill_normal");
}

template <typename Tin, typename Tout>
void cast(Tout* out, const Tin* in, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  SFT_LAUNCH(grid_for(n, kThreads), kThreads, 0, stream, cast_kernel<Tin, Tout>)(out, in, n);
  SFT_CUDA_CHECK_LAUNCH("cast");
}

template <typename T>
void copy_2d(T* dst, int64_t ld_dst, const T* src, int64_t ld_src, int64_t rows, int64_t cols,
             cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  const dim3 grid(unsigned((cols + kThreads - 1) / kThreads), unsigned(std::min<int64_t>(rows, 65535)));
  SFT_LAUNCH(grid, kThreads, 0, stream, copy_2d_kernel<T>)(dst, ld_dst, src, ld_src, rows, cols);
  SFT_CUDA_CHECK_LAUNCH("copy_2d");
}

template <typename TD, typename TS>
void add_into(TD* dst, const TS* src, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  SFT_LAUNCH(grid_for(n, kThreads), kThreads, 0, stream, add_into_kernel<TD, TS>)(dst, src, n);
  SFT_CUDA_CHECK_LAUNCH("add_into");
}

template <typename TD, typename TS>
void add_rows_into(TD* dst, const TS* src, int64_t rows, int64_t cols, int64_t ld_src, cudaStream_t stream) {
  if (cols <= 0 || rows <= 0) return;
  SFT_LAUNCH(grid_for(cols, kThreads), kThreads, 0, stream, add_rows_into_kernel<TD, TS>)(dst, src, rows, cols,
                                                                                          ld_src);
  SFT_CUDA_CHECK_LAUNCH("add_rows_into");
}

template void fill_normal<float>(float*, int64_t, uint64_t, double, double, cudaStream_t);
template void fill_normal<bf16>(bf16*, int64_t, uint64_t, double, double, cudaStream_t);
template void cast<float, bf16>(bf16*, const float*, int64_t, cudaStream_t);
template void cast<bf16, float>(float*, const bf16*, int64_t, cudaStream_t);
template void cast<float, float>(float*, const float*, int64_t, cudaStream_t);
template void copy_2d<float>(float*, int64_t, const float*, int64_t, int64_t, int64_t, cudaStream_t);
template void copy_2d<bf16>(bf16*, int64_t, const bf16*, int64_t, int64_t, int64_t, cudaStream_t);
#define SFT_INSTANTIATE(TD, TS)                                                                     \
  template void add_into<TD, TS>(TD*, const TS*, int64_t, cudaStream_t);                           \
  template void add_rows_into<TD, TS>(TD*, const TS*, int64_t, int64_t, int64_t, cudaStream_t);
SFT_INSTANTIATE(float, float)
SFT_INSTANTIATE(float, bf16)
SFT_INSTANTIATE(bf16, bf16)
#undef SFT_INSTANTIATE

}  // namespace sft::cuda
