// RMSNorm, LayerNorm and row L2-normalisation, forward and backward. One block per row for the
// row-wise parts; the weight (and bias) gradients are column sums over rows, done in two
// deterministic passes (chunks of rows, then the chunks in order).
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


// LayerNorm: two passes over the row in fp32 (the mean first, then the centred variance), which
// keeps the variance accurate where mean^2 >> var.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    layernorm_fwd_kernel(T* out, float* mean, float* rstd, const T* inp, const T* w, const T* b, int64_t C,
                         float eps) {
  __shared__ float red[32];
  const int64_t n = blockIdx.x;
  const T* x = inp + n * C;
  float s = 0.f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += to_f32(x[c]);
  const float mu = block_sum(s, red) / float(C);
  float ss = 0.f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float d = to_f32(x[c]) - mu;
    ss += d * d;
  }
  ss = block_sum(ss, red);
  const float r = rsqrtf(ss / float(C) + eps);
  if (threadIdx.x == 0) {
    if (mean) mean[n] = mu;
    if (rstd) rstd[n] = r;
  }
  T* y = out + n * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    y[c] = from_f32<T>((to_f32(x[c]) - mu) * r * to_f32(w[c]) + to_f32(b[c]));
}

// xh = (x - mean) r, g = w dy:  dx += r (g - mean(g) - xh mean(g xh))
template <typename T>
__global__ void __launch_bounds__(kThreads)
    layernorm_bwd_dx_kernel(T* dinp, const T* dout, const T* inp, const T* w, const float* mean, const float* rstd,
                            int64_t C) {
  __shared__ float red[32];
  const int64_t n = blockIdx.x;
  const T* x = inp + n * C;
  const T* dy = dout + n * C;
  const float m = mean[n], r = rstd[n];
  float sg = 0.f, sgx = 0.f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float g = to_f32(w[c]) * to_f32(dy[c]);
    sg += g;
    sgx += g * (to_f32(x[c]) - m) * r;
  }
  sg = block_sum(sg, red) / float(C);
  sgx = block_sum(sgx, red) / float(C);
  T* dx = dinp + n * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float xh = (to_f32(x[c]) - m) * r;
    dx[c] = from_f32<T>(to_f32(dx[c]) + r * (to_f32(w[c]) * to_f32(dy[c]) - sg - xh * sgx));
  }
}

// pw[chunk, c] = sum over the chunk's rows of dy xh, pb[chunk, c] = sum of dy (rows in order);
// either may be null.
template <typename T>
__global__ void layernorm_bwd_wb_partial(float* pw, float* pb, const T* dout, const T* inp, const float* mean,
                                         const float* rstd, int64_t N, int64_t C, int64_t rows_per_chunk) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int64_t n0 = int64_t(blockIdx.y) * rows_per_chunk;
  const int64_t n1 = n0 + rows_per_chunk < N ? n0 + rows_per_chunk : N;
  float sw = 0.f, sb = 0.f;
  for (int64_t n = n0; n < n1; n++) {
    const float dy = to_f32(dout[n * C + c]);
    if (pw) sw += dy * (to_f32(inp[n * C + c]) - mean[n]) * rstd[n];
    sb += dy;
  }
  if (pw) pw[int64_t(blockIdx.y) * C + c] = sw;
  if (pb) pb[int64_t(blockIdx.y) * C + c] = sb;
}

// Row L2-normalisation: the squared norm is a block sum in fp32 (the CPU's is in double; the
// difference is far inside the checks' tolerance for rows of a few thousand).
template <typename T>
__global__ void __launch_bounds__(kThreads) l2norm_fwd_kernel(T* out, const T* in, int64_t C, float eps) {
  __shared__ float red[32];
  const int64_t r = blockIdx.x;
  const T* x = in + r * C;
  float ss = 0.f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float v = to_f32(x[c]);
    ss += v * v;
  }
  ss = block_sum(ss, red);
  const float inv = 1.f / fmaxf(sqrtf(ss), eps);
  T* y = out + r * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) y[c] = from_f32<T>(to_f32(x[c]) * inv);
}

// y = x / |x| (|x| > eps):  dx += (dy - y (y . dy)) / |x|;  clamped (|x| <= eps): dx += dy / eps.
// The branch is uniform over the block (every thread gets the same block sum).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    l2norm_bwd_kernel(float* din, const float* dout, const T* in, int64_t C, float eps) {
  __shared__ float red[32];
  const int64_t r = blockIdx.x;
  const T* x = in + r * C;
  const float* dy = dout + r * C;
  float* dx = din + r * C;
  float ss = 0.f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float v = to_f32(x[c]);
    ss += v * v;
  }
  const float norm = sqrtf(block_sum(ss, red));
  if (norm <= eps) {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dx[c] += dy[c] / eps;
    return;
  }
  const float inv = 1.f / norm;
  float ydy = 0.f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ydy += to_f32(x[c]) * inv * dy[c];
  ydy = block_sum(ydy, red);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dx[c] += (dy[c] - to_f32(x[c]) * inv * ydy) * inv;
}

// The chunking of the column sums: depends on N only (never on the device), so the summation
// order is fixed.
__global__ void sum_chunks_into(float* dw, const float* partial, int64_t chunks, int64_t C) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float s = 0.f;
  for (int64_t k = 0; k < chunks; k++) s += partial[k * C + c];
  dw[c] += s;
}

}  // namespace

void add_chunk_sums(float* dst, const float* partial, int64_t chunks, int64_t C, cudaStream_t stream) {
  if (C <= 0) return;
  SFT_LAUNCH(unsigned((C + kThreads - 1) / kThreads), kThreads, 0, stream, sum_chunks_into)(dst, partial, chunks, C);
  SFT_CUDA_CHECK_LAUNCH("add_chunk_sums");
}

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
    const int64_t rows_per_chunk = rows_per_chunk_for(N);
    const int64_t chunks = (N + rows_per_chunk - 1) / rows_per_chunk;
    float* partial = nullptr;
    SFT_CUDA_CHECK(cudaMallocAsync(&partial, size_t(chunks * C) * sizeof(float), stream));
    const dim3 grid(unsigned((C + kThreads - 1) / kThreads), unsigned(chunks));
    SFT_LAUNCH(grid, kThreads, 0, stream, rmsnorm_bwd_dw_partial<T>)(partial, dout, inp, rstd, N, C, rows_per_chunk);
    SFT_CUDA_CHECK_LAUNCH("rmsnorm_backward dw partial");
    add_chunk_sums(dw, partial, chunks, C, stream);
    SFT_CUDA_CHECK(cudaFreeAsync(partial, stream));
  }
}

template <typename T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* w, const T* b, int64_t N, int64_t C,
                       double eps, cudaStream_t stream) {
  if (N <= 0) return;
  SFT_LAUNCH(unsigned(N), kThreads, 0, stream, layernorm_fwd_kernel<T>)(out, mean, rstd, inp, w, b, C, float(eps));
  SFT_CUDA_CHECK_LAUNCH("layernorm_forward");
}

template <typename T>
void layernorm_backward(T* dinp, float* dw, float* db, const T* dout, const T* inp, const T* w, const float* mean,
                        const float* rstd, int64_t N, int64_t C, cudaStream_t stream) {
  if (N <= 0) return;
  if (dinp) {
    SFT_LAUNCH(unsigned(N), kThreads, 0, stream, layernorm_bwd_dx_kernel<T>)(dinp, dout, inp, w, mean, rstd, C);
    SFT_CUDA_CHECK_LAUNCH("layernorm_backward dx");
  }
  if (dw || db) {
    const int64_t rows_per_chunk = rows_per_chunk_for(N);
    const int64_t chunks = (N + rows_per_chunk - 1) / rows_per_chunk;
    const size_t one = size_t(chunks * C);
    float* partial = nullptr;
    SFT_CUDA_CHECK(cudaMallocAsync(&partial, (dw && db ? 2 : 1) * one * sizeof(float), stream));
    float* pw = dw ? partial : nullptr;
    float* pb = db ? partial + (dw ? one : 0) : nullptr;
    const unsigned col_blocks = unsigned((C + kThreads - 1) / kThreads);
    SFT_LAUNCH(dim3(col_blocks, unsigned(chunks)), kThreads, 0, stream, layernorm_bwd_wb_partial<T>)(
        pw, pb, dout, inp, mean, rstd, N, C, rows_per_chunk);
    SFT_CUDA_CHECK_LAUNCH("layernorm_backward dw/db partial");
    if (dw) add_chunk_sums(dw, pw, chunks, C, stream);
    if (db) add_chunk_sums(db, pb, chunks, C, stream);
    SFT_CUDA_CHECK(cudaFreeAsync(partial, stream));
  }
}

template <typename T>
void l2norm_rows_forward(T* out, const T* in, int64_t R, int64_t C, double eps, cudaStream_t stream) {
  if (R <= 0) return;
  SFT_LAUNCH(unsigned(R), kThreads, 0, stream, l2norm_fwd_kernel<T>)(out, in, C, float(eps));
  SFT_CUDA_CHECK_LAUNCH("l2norm_rows_forward");
}

template <typename T>
void l2norm_rows_backward(float* din, const float* dout, const T* in, int64_t R, int64_t C, double eps,
                          cudaStream_t stream) {
  if (R <= 0) return;
  SFT_LAUNCH(unsigned(R), kThreads, 0, stream, l2norm_bwd_kernel<T>)(din, dout, in, C, float(eps));
  SFT_CUDA_CHECK_LAUNCH("l2norm_rows_backward");
}

#define SFT_INSTANTIATE(T)                                                                              \
  template void rmsnorm_forward<T>(T*, float*, const T*, const T*, int64_t, int64_t, double, cudaStream_t); \
  template void rmsnorm_backward<T>(T*, float*, const T*, const T*, const T*, const float*, int64_t, int64_t, \
                                    cudaStream_t);                                                      \
  template void layernorm_forward<T>(T*, float*, float*, const T*, const T*, const T*, int64_t, int64_t, double, \
                                     cudaStream_t);                                                     \
  template void layernorm_backward<T>(T*, float*, float*, const T*, const T*, const T*, const float*,  \
                                      const float*, int64_t, int64_t, cudaStream_t);                    \
  template void l2norm_rows_forward<T>(T*, const T*, int64_t, int64_t, double, cudaStream_t);           \
  template void l2norm_rows_backward<T>(float*, const float*, const T*, int64_t, int64_t, double, cudaStream_t);
SFT_INSTANTIATE(float)
SFT_INSTANTIATE(bf16)
#undef SFT_INSTANTIATE

}  // namespace sft::cuda
