// Cross-entropy: one block per row. Pass 1 keeps a running (max, sum of exp) per thread (an online
// softmax: the logits are read once), merged across the block; pass 2 writes the gradient in place.
// The total is summed by one block in row order, so it does not depend on scheduling (nor on how
// the model chunked the rows: model/decoder.h runs the row kernel per chunk, the sum once).
#include "cuda/loss.cuh"
#include "cuda/common.cuh"

namespace sft::cuda {
namespace {

constexpr int kThreads = 512;

// (m, s) pairs: s = sum exp(x - m). Merging two pairs rescales to the larger max.
__device__ __forceinline__ void lse_merge(float& m, float& s, float m2, float s2) {
  const float mx = fmaxf(m, m2);
  if (mx == -INFINITY) return;  // both empty
  s = s * expf(m - mx) + s2 * expf(m2 - mx);
  m = mx;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_kernel(T* logits, const int32_t* targets, int64_t V, float scale, bool grad, double* row_loss) {
  __shared__ float red_m[32], red_s[32];
  __shared__ float x_target;
  const int64_t n = blockIdx.x;
  T* x = logits + n * V;
  const int32_t t = targets[n];
  if (t < 0) {
    if (grad)
      for (int64_t v = threadIdx.x; v < V; v += blockDim.x) x[v] = from_f32<T>(0.f);
    if (threadIdx.x == 0) row_loss[n] = 0;
    return;
  }
  float m = -INFINITY, s = 0.f;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float xv = to_f32(x[v]);
    if (xv > m) {
      s = s * expf(m - xv) + 1.f;
      m = xv;
    } else {
      s += expf(xv - m);
    }
  }
  // Merge across the warp, then across warps (fixed order: deterministic).
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
    lse_merge(m, s, m2, s2);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  if (lane == 0) red_m[warp] = m, red_s[warp] = s;
  if (threadIdx.x == 0) x_target = t < V ? to_f32(x[t]) : NAN;
  __syncthreads();
  m = -INFINITY, s = 0.f;
  for (int w = 0; w < nw; w++) lse_merge(m, s, red_m[w], red_s[w]);
  const float lse = m + logf(s);
  if (threadIdx.x == 0) row_loss[n] = double(lse - x_target);  // the float loss, widened
  if (!grad) return;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float p = scale * expf(to_f32(x[v]) - lse);
    x[v] = from_f32<T>(v == t ? p - scale : p);
  }
}

// One block: thread i sums rows i, i + blockDim, ... in order, then a fixed-shape tree.
__global__ void sum_rows_kernel(const double* row_loss, const int32_t* targets, int64_t N, double* loss_sum,
                                long long* count) {
  __shared__ double red[32];
  double s = 0;
  double c = 0;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    s += row_loss[n];
    c += targets[n] >= 0 ? 1.0 : 0.0;
  }
  s = block_sum(s, red);
  c = block_sum(c, red);
  if (threadIdx.x == 0) {
    *loss_sum = s;
    *count = (long long)c;
  }
}

}  // namespace

template <typename T>
void cross_entropy_rows(T* logits, const int32_t* targets, int64_t N, int64_t V, float scale, bool grad, double* row_loss,
                        cudaStream_t stream) {
  if (N <= 0) return;
  SFT_LAUNCH(unsigned(N), kThreads, 0, stream, cross_entropy_kernel<T>)(logits, targets, V, scale, grad, row_loss);
  SFT_CUDA_CHECK_LAUNCH("cross_entropy");
}

void loss_sum_async(const double* row_loss, const int32_t* targets, int64_t N, double* loss_sum, long long* count,
                    cudaStream_t stream) {
  SFT_LAUNCH(1, 1024, 0, stream, sum_rows_kernel)(row_loss, targets, N, loss_sum, count);
  SFT_CUDA_CHECK_LAUNCH("cross_entropy sum");
}

double loss_total(const double* row_loss, const int32_t* targets, int64_t N, int64_t* count, cudaStream_t stream) {
  // One scratch allocation: [loss_sum (8 bytes) | count (8 bytes)].
  char* scratch = nullptr;
  SFT_CUDA_CHECK(cudaMallocAsync(&scratch, 16, stream));
  double* d_sum = reinterpret_cast<double*>(scratch);
  long long* d_count = reinterpret_cast<long long*>(scratch + 8);
  loss_sum_async(row_loss, targets, N, d_sum, d_count, stream);
  double sum = 0;
  long long c = 0;
  SFT_CUDA_CHECK(cudaMemcpyAsync(&sum, d_sum, sizeof(sum), cudaMemcpyDeviceToHost, stream));
  SFT_CUDA_CHECK(cudaMemcpyAsync(&c, d_count, sizeof(c), cudaMemcpyDeviceToHost, stream));
  SFT_CUDA_CHECK(cudaFreeAsync(scratch, stream));
  SFT_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (count) *count = int64_t(c);
  return sum;
}

template <typename T>
void cross_entropy_async(T* logits, const int32_t* targets, int64_t N, int64_t V, float scale, bool grad,
                         double* row_loss, double* loss_sum, long long* count, cudaStream_t stream) {
  cross_entropy_rows<T>(logits, targets, N, V, scale, grad, row_loss, stream);
  loss_sum_async(row_loss, targets, N, loss_sum, count, stream);
}

template <typename T>
double cross_entropy(T* logits, const int32_t* targets, int64_t N, int64_t V, float scale, bool grad,
                     int64_t* count, cudaStream_t stream) {
  double* row_loss = nullptr;
  SFT_CUDA_CHECK(cudaMallocAsync(&row_loss, size_t(N > 0 ? N : 1) * sizeof(double), stream));
  cross_entropy_rows<T>(logits, targets, N, V, scale, grad, row_loss, stream);
  const double sum = loss_total(row_loss, targets, N, count, stream);
  SFT_CUDA_CHECK(cudaFreeAsync(row_loss, stream));
  return sum;
}

#define SFT_INSTANTIATE(T)                                                                                 \
  template double cross_entropy<T>(T*, const int32_t*, int64_t, int64_t, float, bool, int64_t*, cudaStream_t); \
  template void cross_entropy_rows<T>(T*, const int32_t*, int64_t, int64_t, float, bool, double*, cudaStream_t); \
  template void cross_entropy_async<T>(T*, const int32_t*, int64_t, int64_t, float, bool, double*, double*,   \
                                       long long*, cudaStream_t);
SFT_INSTANTIATE(float)
SFT_INSTANTIATE(bf16)
#undef SFT_INSTANTIATE

}  // namespace sft::cuda
