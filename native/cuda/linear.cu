// Bias add (grid-stride elementwise) and the bias gradient (a column sum over rows in two
// deterministic passes: chunks of rows, then the chunks in order, like rmsnorm_backward's dw).
#include "cuda/linear.cuh"
#include "cuda/common.cuh"

#include <algorithm>

namespace sft::cuda {
namespace {

constexpr int kThreads = 256;

// 2-D grid: x covers the N columns (so bias[n] is one coalesced read per thread), y strides rows.
template <typename T>
__global__ void add_bias_kernel(T* out, const T* bias, int64_t M, int64_t N) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const float b = to_f32(bias[n]);
  for (int64_t m = blockIdx.y; m < M; m += gridDim.y) out[m * N + n] = from_f32<T>(to_f32(out[m * N + n]) + b);
}

// partial[chunk, n] = sum over the chunk's rows of dout[m, n] (rows in order).
template <typename T>
__global__ void bias_bwd_partial(float* partial, const T* dout, int64_t M, int64_t N, int64_t rows_per_chunk) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const int64_t m0 = int64_t(blockIdx.y) * rows_per_chunk;
  const int64_t m1 = m0 + rows_per_chunk < M ? m0 + rows_per_chunk : M;
  float s = 0.f;
  for (int64_t m = m0; m < m1; m++) s += to_f32(dout[m * N + n]);
  partial[int64_t(blockIdx.y) * N + n] = s;
}


}  // namespace

template <typename T>
void add_bias(T* out, const T* bias, int64_t M, int64_t N, cudaStream_t stream) {
  if (M <= 0 || N <= 0) return;
  const dim3 grid(unsigned((N + kThreads - 1) / kThreads), unsigned(std::min<int64_t>(M, 65535)));
  SFT_LAUNCH(grid, kThreads, 0, stream, add_bias_kernel<T>)(out, bias, M, N);
  SFT_CUDA_CHECK_LAUNCH("add_bias");
}

template <typename T>
void bias_backward(float* dbias, const T* dout, int64_t M, int64_t N, cudaStream_t stream) {
  if (M <= 0 || N <= 0) return;
  // The chunking depends on M only (never on the device), so the summation order is fixed.
  const int64_t rows_per_chunk = rows_per_chunk_for(M);
  const int64_t chunks = (M + rows_per_chunk - 1) / rows_per_chunk;
  float* partial = nullptr;
  SFT_CUDA_CHECK(cudaMallocAsync(&partial, size_t(chunks * N) * sizeof(float), stream));
  const unsigned col_blocks = unsigned((N + kThreads - 1) / kThreads);
  SFT_LAUNCH(dim3(col_blocks, unsigned(chunks)), kThreads, 0, stream, bias_bwd_partial<T>)(partial, dout, M, N,
                                                                                           rows_per_chunk);
  SFT_CUDA_CHECK_LAUNCH("bias_backward partial");
  add_chunk_sums(dbias, partial, chunks, N, stream);
  SFT_CUDA_CHECK(cudaFreeAsync(partial, stream));
}

#define SFT_INSTANTIATE(T)                                                          \
  template void add_bias<T>(T*, const T*, int64_t, int64_t, cudaStream_t);          \
  template void bias_backward<T>(float*, const T*, int64_t, int64_t, cudaStream_t);
SFT_INSTANTIATE(float)
SFT_INSTANTIATE(bf16)
#undef SFT_INSTANTIATE

}  // namespace sft::cuda
