// Rotary embeddings: one thread per (row, head, pair).
#include "cuda/rope.cuh"
#include "cuda/common.cuh"

namespace sft::cuda {
namespace {

template <typename T>
__global__ void rope_kernel(T* x, int64_t ld, int64_t rows, int64_t T_, int64_t p0, int heads, int half,
                            const float* cos, const float* sin, float sign) {
  const int64_t total = rows * heads * half;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int i = int(idx % half);
    const int h = int((idx / half) % heads);
    const int64_t r = idx / (int64_t(half) * heads);
    const int64_t pos = p0 + r % T_;
    const float c = cos[pos * half + i], s = sin[pos * half + i];
    T* v = x + r * ld + int64_t(h) * 2 * half;
    const float a = to_f32(v[i]), b = to_f32(v[i + half]);
    v[i] = from_f32<T>(a * c - sign * b * s);
    v[i + half] = from_f32<T>(b * c + sign * a * s);
  }
}

template <typename T>
void rotate(T* x, int64_t ld, int64_t rows, int64_t T_, int64_t p0, int heads, int hd, const float* cos,
            const float* sin, float sign, cudaStream_t stream) {
  const int64_t total = rows * heads * (hd / 2);
  if (total <= 0) return;
  SFT_LAUNCH(grid_for(total, 256), 256, 0, stream, rope_kernel<T>)(x, ld, rows, T_, p0, heads, hd / 2, cos, sin, sign);
  SFT_CUDA_CHECK_LAUNCH("rope");
}

}  // namespace

template <typename T>
void rope_forward(T* x, int64_t ld, int64_t rows, int64_t T_, int64_t p0, int heads, int hd, const float* cos,
                  const float* sin, cudaStream_t stream) {
  rotate<T>(x, ld, rows, T_, p0, heads, hd, cos, sin, 1.f, stream);
}

template <typename T>
void rope_backward(T* dx, int64_t ld, int64_t rows, int64_t T_, int64_t p0, int heads, int hd, const float* cos,
                   const float* sin, cudaStream_t stream) {
  rotate<T>(dx, ld, rows, T_, p0, heads, hd, cos, sin, -1.f, stream);
}

#define SFT_INSTANTIATE(T)                                                                                  \
  template void rope_forward<T>(T*, int64_t, int64_t, int64_t, int64_t, int, int, const float*, const float*, \
                                cudaStream_t);                                                              \
  template void rope_backward<T>(T*, int64_t, int64_t, int64_t, int64_t, int, int, const float*, const float*, \
                                 cudaStream_t);
SFT_INSTANTIATE(float)
SFT_INSTANTIATE(bf16)
#undef SFT_INSTANTIATE

}  // namespace sft::cuda
