// Fused AdamW (one pass, memory bound) and a two-launch, fixed-order global gradient norm.
#include "cuda/adamw.cuh"
#include "cuda/common.cuh"
#include "cuda/dynamic_map.cuh"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace sft::cuda {
namespace {

// The constants are computed on the host in double exactly as the CPU backend does; the update
// uses IEEE-rounded sqrt and division (__fsqrt_rn, __fdiv_rn) even under --use_fast_math so the
// result stays within rounding of the CPU's. kCopy also stores the bf16 rounding of the new p.
template <bool kCopy>
__global__ void adamw_kernel(float* p, bf16* p_copy, const float* g, float* m, float* v, int64_t n, float step_size,
                             float bc2_sqrt, float decay, float b1, float b2, float eps, float gs) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = g[i] * gs;
    float pi = p[i] * decay;
    const float mi = b1 * m[i] + (1.f - b1) * gi;
    const float vi = b2 * v[i] + (1.f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float denom = __fdiv_rn(__fsqrt_rn(vi), bc2_sqrt) + eps;
    const float pn = pi - __fdiv_rn(step_size * mi, denom);
    p[i] = pn;
    if (kCopy) p_copy[i] = from_f32<bf16>(pn);
  }
}

// 8-bit AdamW (bitsandbytes' blockwise states, as cpu::adamw_update_8bit): one block of 256 threads
// per 256 elements. Each thread decodes its moments (map value * block scale), takes the same
// update as adamw_kernel, and the block re-quantizes: the new scales are the block's max |m| and
// max v, the codes the nearest map entries of m / max|m| and v / max v.
constexpr int kQ8 = 256;
__global__ void adamw_8bit_kernel(float* p, const float* g, uint8_t* m8, float* m_absmax, uint8_t* v8, float* v_absmax,
                                  const float* smap, const float* umap, int64_t n, float step_size, float bc2_sqrt,
                                  float decay, float b1, float b2, float eps, float gs) {
  __shared__ float red[32];
  const int64_t b = blockIdx.x, i = b * kQ8 + threadIdx.x;
  const bool in = i < n;
  float mi = 0.f, vi = 0.f;
  if (in) {
    const float gi = g[i] * gs;
    const float m0 = __fmul_rn(smap[m8[i]], m_absmax[b]), v0 = __fmul_rn(umap[v8[i]], v_absmax[b]);
    const float pi = p[i] * decay;
    mi = b1 * m0 + (1.f - b1) * gi;
    vi = b2 * v0 + (1.f - b2) * gi * gi;
    const float denom = __fdiv_rn(__fsqrt_rn(vi), bc2_sqrt) + eps;
    p[i] = pi - __fdiv_rn(step_size * mi, denom);
  }
  const float ma = block_max(fabsf(mi), red), va = block_max(vi, red);
  if (threadIdx.x == 0) m_absmax[b] = ma, v_absmax[b] = va;
  if (in) {
    m8[i] = map_index_dev(smap, __fmul_rn(mi, ma > 0 ? __fdiv_rn(1.0f, ma) : 0.0f));
    v8[i] = map_index_dev(umap, __fmul_rn(vi, va > 0 ? __fdiv_rn(1.0f, va) : 0.0f));
  }
}

constexpr int kNormThreads = 256;
constexpr int kNormChunks = 64;  // blocks per tensor: the partial count and order depend on nothing else

// grid (kNormChunks, count): partial[t * kNormChunks + chunk] = sum of squares of that chunk's
// grid-stride share of tensor t, reduced in double.
__global__ void sumsq_partial_kernel(double* partial, const float* const* grads, const int64_t* sizes) {
  __shared__ double red[32];
  const int t = blockIdx.y;
  const float* x = grads[t];
  const int64_t n = sizes[t];
  double s = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const double xi = x[i];
    s += xi * xi;
  }
  s = block_sum(s, red);
  if (threadIdx.x == 0) partial[int64_t(t) * kNormChunks + blockIdx.x] = s;
}

__global__ void sum_partials_kernel(double* out, const double* partial, int64_t n) {
  __shared__ double red[32];
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
  s = block_sum(s, red);
  if (threadIdx.x == 0) *out = s;
}

// The host-side constants, in double as the CPU backend computes them, then the one kernel.
template <bool kCopy>
void adamw_launch(float* p, bf16* p_copy, const float* g, float* m, float* v, int64_t n, double lr, double b1,
                  double b2, double eps, double weight_decay, int64_t t, double grad_scale, cudaStream_t stream) {
  const double bc1 = 1.0 - std::pow(b1, double(t));
  const double bc2 = 1.0 - std::pow(b2, double(t));
  SFT_LAUNCH(grid_for(n, 256), 256, 0, stream, adamw_kernel<kCopy>)(p, p_copy, g, m, v, n, float(lr / bc1),
                                                            float(std::sqrt(bc2)), float(1.0 - lr * weight_decay),
                                                            float(b1), float(b2), float(eps), float(grad_scale));
}

}  // namespace

void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, double lr, double b1, double b2,
                  double eps, double weight_decay, int64_t t, double grad_scale, cudaStream_t stream) {
  if (n <= 0) return;
  adamw_launch<false>(p, nullptr, g, m, v, n, lr, b1, b2, eps, weight_decay, t, grad_scale, stream);
  SFT_CUDA_CHECK_LAUNCH("adamw_update");
}

void adamw_update_copy(float* p, bf16* p_copy, const float* g, float* m, float* v, int64_t n, double lr, double b1,
                       double b2, double eps, double weight_decay, int64_t t, double grad_scale, cudaStream_t stream) {
  if (n <= 0) return;
  adamw_launch<true>(p, p_copy, g, m, v, n, lr, b1, b2, eps, weight_decay, t, grad_scale, stream);
  SFT_CUDA_CHECK_LAUNCH("adamw_update_copy");
}

void adamw_update_8bit(float* p, const float* g, uint8_t* m8, float* m_absmax, uint8_t* v8, float* v_absmax,
                       const float* smap, const float* umap, int64_t n, double lr, double b1, double b2, double eps,
                       double weight_decay, int64_t t, double grad_scale, cudaStream_t stream) {
  if (n <= 0) return;
  const int64_t blocks = (n + kQ8 - 1) / kQ8;
  if (blocks > 2147483647LL) throw std::runtime_error("adamw_update_8bit: too many blocks");
  const double bc1 = 1.0 - std::pow(b1, double(t));
  const double bc2 = 1.0 - std::pow(b2, double(t));
  SFT_LAUNCH(unsigned(blocks), kQ8, 0, stream, adamw_8bit_kernel)(p, g, m8, m_absmax, v8, v_absmax, smap, umap, n,
                                                          float(lr / bc1), float(std::sqrt(bc2)),
                                                          float(1.0 - lr * weight_decay), float(b1), float(b2),
                                                          float(eps), float(grad_scale));
  SFT_CUDA_CHECK_LAUNCH("adamw_update_8bit");
}

double global_grad_norm(const float* const* grads, const int64_t* sizes, int count, cudaStream_t stream) {
  if (count <= 0) return 0.0;
  if (count > 65535) throw std::runtime_error("global_grad_norm: more than 65535 tensors in one call");
  // One device block: [partials (count*chunks doubles) | result (1 double) | pointers | sizes].
  const size_t n_partial = size_t(count) * kNormChunks;
  const size_t bytes = (n_partial + 1) * sizeof(double) + size_t(count) * (sizeof(float*) + sizeof(int64_t));
  std::vector<char> host(bytes - (n_partial + 1) * sizeof(double));
  std::memcpy(host.data(), grads, size_t(count) * sizeof(float*));
  std::memcpy(host.data() + size_t(count) * sizeof(float*), sizes, size_t(count) * sizeof(int64_t));
  char* dev = nullptr;
  SFT_CUDA_CHECK(cudaMallocAsync(&dev, bytes, stream));
  double* partial = reinterpret_cast<double*>(dev);
  double* result = partial + n_partial;
  char* tables = reinterpret_cast<char*>(result + 1);
  SFT_CUDA_CHECK(cudaMemcpyAsync(tables, host.data(), host.size(), cudaMemcpyHostToDevice, stream));
  const dim3 grid(kNormChunks, unsigned(count));
  SFT_LAUNCH(grid, kNormThreads, 0, stream, sumsq_partial_kernel)(partial, reinterpret_cast<const float* const*>(tables),
                                                          reinterpret_cast<const int64_t*>(tables + size_t(count) * sizeof(float*)));
  SFT_CUDA_CHECK_LAUNCH("global_grad_norm partial");
  SFT_LAUNCH(1, 1024, 0, stream, sum_partials_kernel)(result, partial, int64_t(n_partial));
  SFT_CUDA_CHECK_LAUNCH("global_grad_norm sum");
  double sumsq = 0;
  SFT_CUDA_CHECK(cudaMemcpyAsync(&sumsq, result, sizeof(double), cudaMemcpyDeviceToHost, stream));
  SFT_CUDA_CHECK(cudaFreeAsync(dev, stream));
  SFT_CUDA_CHECK(cudaStreamSynchronize(stream));
  return std::sqrt(sumsq);
}

}  // namespace sft::cuda
