// RMSNorm forward and backward. One block per row for the row-wise parts; the weight gradient is a
// column sum over rows, done in two deterministic passes (chunks of rows, then the chunks in order).
#include "cuda/norm.cuh"
#include "cuda/common.cuh"

#include <algorithm>

namespace sft::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_fwd_kernel(T* out, float* rstd, const T* inp, const T* w, int64_t C, float eps) {
  __shared__ float red[32];
  const int64_t n = blockIdx.x;
  const T* x = inp + n * C;
  float ss = 0.f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float v = to_f32(x[c]);
    ss += v * v;
  }
  ss = block_sum(ss, red);
  const float r = rsqrtf(ss / float(C) + eps);
  if (threadIdx.x == 0) rstd[n] = r;
  T* y = out + n * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) y[c] = from_f32<T>(to_f32(w[c]) * (to_f32(x[c]) * r));
}

// dx_c += r w_c dy_c - (r^3 / C) x_c sum_j(w_j dy_j x_j)
template <typename T>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_bwd_dx_kernel(T* dinp, const T* dout, const T* inp, const T* w, const float* rstd, int64_t C) {
  __shared__ float red[32];
  const int64_t n = blockIdx.x;
  const T* x = inp + n * C;
  const T* dy = dout + n * C;
  const float r = rstd[n];
  float dot = 0.f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dot += to_f32(w[c]) * to_f32(dy[c]) * to_f32(x[c]);
  dot = block_sum(dot, red);
  const float k = r * r * r * dot / float(C);
  T* dx = dinp + n * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    dx[c] = from_f32<T>(to_f32(dx[c]) + r * to_f32(w[c]) * to_f32(dy[c]) - k * to_f32(x[c]));
}

// partial[chunk, c] = sum over the chunk's rows of dy x r (rows in order).
template <typename T>
__global__ void rmsnorm_bwd_dw_partial(float* partial, const T* dout, const T* inp, const float* rstd, int64_t N,
                                       int64_t C, int64_t rows_per_chunk) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int64_t n0 = int64_t(blockIdx.y) * rows_per_chunk;
  const int64_t n1 = n0 + rows_per_chunk < N ? n0 + rows_per_chunk : N;
  float s = 0.f;
  for (int64_t n = n0; n < n1; n++) s += to_f32(dout[n * C + c]) * to_f32(inp[n * C + c]) * rstd[n];
  partial[int64_t(blockIdx.y) * C + c] = s;
}

__global__ void sum_chunks_into(float* dw, const float* partial, int64_t chunks, int64_t C) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float s = 0.f;
  for (int64_t k = 0; k < chunks; k++) s += partial[k * C + c];
  dw[c] += s;
}

}  // namespace

template <typename T>
void rmsnorm_forward(T* out, float* rstd, const T* inp, const T* w, int64_t N, int64_t C, double eps,
                     cudaStream_t stream) {
  if (N <= 0) return;
  SFT_LAUNCH(unsigned(N), kThreads, 0, stream, rmsnorm_fwd_kernel<T>)(out, rstd, inp, w, C, float(eps));
  SFT_CUDA_CHECK_LAUNCH("rmsnorm_forward");
}

template <typename T>
void rmsnorm_backward(T* dinp, float* dw, const T* dout, const T* inp, const T* w, const float* rstd, int64_t N,
                      int64_t C, cudaStream_t stream) {
  if (N <= 0) return;
  if (dinp) {
    SFT_LAUNCH(unsigned(N), kThreads, 0, stream, rmsnorm_bwd_dx_kernel<T>)(dinp, dout, inp, w, rstd, C);
    SFT_CUDA_CHECK_LAUNCH("rmsnorm_backward dx");
  }
  if (dw) {
    // The chunking depends on N only (never on the device), so the summation order is fixed.
    const int64_t rows_per_chunk = std::max<int64_t>(32, (N + 63) / 64);  // at most 64 chunks
    const int64_t chunks = (N + rows_per_chunk - 1) / rows_per_chunk;
    float* partial = nullptr;
    SFT_CUDA_CHECK(cudaMallocAsync(&partial, size_t(chunks * C) * sizeof(float), stream));
    const dim3 grid(unsigned((C + kThreads - 1) / kThreads), unsigned(chunks));
    SFT_LAUNCH(grid, kThreads, 0, stream, rmsnorm_bwd_dw_partial<T>)(partial, dout, inp, rstd, N, C, rows_per_chunk);
    SFT_CUDA_CHECK_LAUNCH("rmsnorm_backward dw partial");
    SFT_LAUNCH(unsigned((C + kThreads - 1) / kThreads), kThreads, 0, stream, sum_chunks_into)(dw, partial, chunks, C);
    SFT_CUDA_CHECK_LAUNCH("rmsnorm_backward dw sum");
    SFT_CUDA_CHECK(cudaFreeAsync(partial, stream));
  }
}

#define SFT_INSTANTIATE(T)                                                                              \
  template void rmsnorm_forward<T>(T*, float*, const T*, const T*, int64_t, int64_t, double, cudaStream_t); \
  template void rmsnorm_backward<T>(T*, float*, const T*, const T*, const T*, const float*, int64_t, int64_t, \
                                    cudaStream_t);
SFT_INSTANTIATE(float)
SFT_INSTANTIATE(bf16)
#undef SFT_INSTANTIATE

}  // namespace sft::cuda
