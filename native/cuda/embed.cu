// Embedding lookup (one block per token) and its column-owned scatter-add backward.
#include "cuda/embed.cuh"
#include "cuda/common.cuh"

namespace sft::cuda {
namespace {

template <typename T>
__global__ void embedding_fwd_kernel(T* out, const int32_t* ids, const T* table, int64_t C) {
  const int64_t i = blockIdx.x;
  const T* src = table + int64_t(ids[i]) * C;
  T* dst = out + i * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dst[c] = src[c];
}

template <typename T>
__global__ void embedding_bwd_kernel(float* dtable, const T* dout, const int32_t* ids, int64_t n, int64_t C) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  for (int64_t i = 0; i < n; i++) {
    float* row = dtable + int64_t(ids[i]) * C;
    row[c] += to_f32(dout[i * C + c]);
  }
}

}  // namespace

template <typename T>
void embedding_forward(T* out, const int32_t* ids, const T* table, int64_t n, int64_t C, cudaStream_t stream) {
  if (n <= 0) return;
  SFT_LAUNCH(unsigned(n), 256, 0, stream, embedding_fwd_kernel<T>)(out, ids, table, C);
  SFT_CUDA_CHECK_LAUNCH("embedding_forward");
}

template <typename T>
void embedding_backward(float* dtable, const T* dout, const int32_t* ids, int64_t n, int64_t C,
                        cudaStream_t stream) {
  if (n <= 0) return;
  // 64-thread blocks: C/64 blocks spread the columns over more SMs than 256-thread blocks would.
  SFT_LAUNCH(unsigned((C + 63) / 64), 64, 0, stream, embedding_bwd_kernel<T>)(dtable, dout, ids, n, C);
  SFT_CUDA_CHECK_LAUNCH("embedding_backward");
}

template void embedding_forward<float>(float*, const int32_t*, const float*, int64_t, int64_t, cudaStream_t);
template void embedding_forward<bf16>(bf16*, const int32_t*, const bf16*, int64_t, int64_t, cudaStream_t);
template void embedding_backward<float>(float*, const float*, const int32_t*, int64_t, int64_t, cudaStream_t);
template void embedding_backward<bf16>(float*, const bf16*, const int32_t*, int64_t, int64_t, cudaStream_t);

}  // namespace sft::cuda
