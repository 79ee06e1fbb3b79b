// Causal GQA attention: tiled forward (online softmax), tiled backward (dK/dV and dQ kernels that
// recompute P from the saved logsumexp), and generic one-warp-per-row kernels for other head dims.
// The generic kernels also take per-head column strides and optional ALiBi slopes, so the ALiBi
// launchers (Bloom) run the same kernels as the generic GQA path.
//
// Tiled kernels: 256 threads as a 16 x 16 grid (tx = column lane, ty = row lane). A thread owns
// rows ty + 16 i and columns tx + 16 j of every tile it computes, so that
//  - a row's 16 owners are one half-warp: row max / row sum are 4 xor-shuffles (offsets 8..1);
//  - shared-memory reads are broadcasts (same row) or 16 consecutive words (row stride D + 1
//    where threads read different rows, so those rows fall in different banks).
// Scores use Q pre-multiplied by 1/sqrt(hd), so lse is the logsumexp of the scaled scores.
// Tile sizes keep shared memory under 99 KiB (the sm_86/sm_89 per-block limit).
#include "cuda/attention.cuh"
#include "cuda/attention_mma.cuh"
#include "cuda/common.cuh"

#include <stdexcept>
#include <string>
#include <type_traits>

namespace sft::cuda {
namespace {

constexpr int kThreads = 256;

// dst[r * ld_s + d] = src[(row0 + r) * ld_src + d] * mul for r < rows (zero past `limit` rows).
template <typename T, int D>
__device__ __forceinline__ void load_rows(float* dst, int ld_s, const T* src, int64_t ld_src, int64_t row0,
                                          int rows, int64_t limit, float mul) {
  for (int idx = threadIdx.x; idx < rows * D; idx += kThreads) {
    const int r = idx / D, d = idx % D;
    const int64_t row = row0 + r;
    dst[r * ld_s + d] = row < limit ? to_f32(src[row * ld_src + d]) * mul : 0.f;
  }
}

__device__ __forceinline__ float half_warp_max(float v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float half_warp_sum(float v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Forward: block = (query tile of BR rows, head, batch).

template <int D, int BR, int BC>
constexpr size_t fwd_smem_bytes() {
  return sizeof(float) * (size_t(BR) * (D + 1) + size_t(BC) * (D + 1) + size_t(BC) * D + size_t(BR) * (BC + 1));
}

template <typename T, int D, int BR, int BC>
__global__ void __launch_bounds__(kThreads)
    attn_fwd_tiled(T* out, float* lse, const T* q, int64_t ldq, const T* k, const T* v, int64_t ldkv, int64_t Tq,
                   int64_t Tk, int64_t p0, int nh, int group, float scale) {
  constexpr int TM = BR / 16, TN = BC / 16, DJ = D / 16, LD = D + 1, LP = BC + 1;
  SFT_DYNAMIC_SMEM(float, smem);
  float* Qs = smem;           // [BR][LD], scaled
  float* Ks = Qs + BR * LD;   // [BC][LD]
  float* Vs = Ks + BC * LD;   // [BC][D]
  float* Ps = Vs + BC * D;    // [BR][LP]
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int h = blockIdx.y, kvh = h / group;
  // Last query tiles first: they see the most keys, so the long blocks start early.
  const int64_t b = blockIdx.z, q0 = int64_t(gridDim.x - 1 - blockIdx.x) * BR;
  const T* qb = q + b * Tq * ldq + int64_t(h) * D;
  const T* kb = k + b * Tk * ldkv + int64_t(kvh) * D;
  const T* vb = v + b * Tk * ldkv + int64_t(kvh) * D;
  load_rows<T, D>(Qs, LD, qb, ldq, q0, BR, Tq, scale);

  float m[TM], l[TM], o[TM][DJ];
#pragma unroll
  for (int i = 0; i < TM; i++) {
    m[i] = -INFINITY;
    l[i] = 0.f;
#pragma unroll
    for (int j = 0; j < DJ; j++) o[i][j] = 0.f;
  }
  const int64_t q_end = q0 + BR < Tq ? q0 + BR : Tq;
  const int64_t n_keys = p0 + q_end;  // the tile's last query sees keys 0 .. p0 + q_end - 1
  for (int64_t k0 = 0; k0 < n_keys; k0 += BC) {
    __syncthreads();  // the previous tile's readers are done (and Qs is complete)
    load_rows<T, D>(Ks, LD, kb, ldkv, k0, BC, Tk, 1.f);
    load_rows<T, D>(Vs, D, vb, ldkv, k0, BC, Tk, 1.f);
    __syncthreads();
    float s[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
      for (int j = 0; j < TN; j++) s[i][j] = 0.f;
#pragma unroll 4
    for (int d = 0; d < D; d++) {
      float a[TM], bk[TN];
#pragma unroll
      for (int i = 0; i < TM; i++) a[i] = Qs[(ty + 16 * i) * LD + d];
#pragma unroll
      for (int j = 0; j < TN; j++) bk[j] = Ks[(tx + 16 * j) * LD + d];
#pragma unroll
      for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++) s[i][j] += a[i] * bk[j];
    }
#pragma unroll
    for (int i = 0; i < TM; i++) {
      const int64_t qpos = p0 + q0 + ty + 16 * i;
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < TN; j++) {
        if (k0 + tx + 16 * j > qpos) s[i][j] = -INFINITY;  // causal (also hides keys >= Tk)
        mx = fmaxf(mx, s[i][j]);
      }
      mx = half_warp_max(mx);
      const float m_new = fmaxf(m[i], mx);
      const float base = m_new == -INFINITY ? 0.f : m_new;  // a row with no visible key yet
      const float alpha = __expf(m[i] - base);
      float rs = 0.f;
#pragma unroll
      for (int j = 0; j < TN; j++) {
        const float p = __expf(s[i][j] - base);
        Ps[(ty + 16 * i) * LP + tx + 16 * j] = p;
        rs += p;
      }
      rs = half_warp_sum(rs);
      l[i] = l[i] * alpha + rs;
      m[i] = m_new;
#pragma unroll
      for (int j = 0; j < DJ; j++) o[i][j] *= alpha;
    }
    __syncthreads();
#pragma unroll 4
    for (int c = 0; c < BC; c++) {
      float p[TM], vv[DJ];
#pragma unroll
      for (int i = 0; i < TM; i++) p[i] = Ps[(ty + 16 * i) * LP + c];
#pragma unroll
      for (int j = 0; j < DJ; j++) vv[j] = Vs[c * D + tx + 16 * j];
#pragma unroll
      for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < DJ; j++) o[i][j] += p[i] * vv[j];
    }
  }
  const int64_t ldo = int64_t(nh) * D;
#pragma unroll
  for (int i = 0; i < TM; i++) {
    const int64_t qi = q0 + ty + 16 * i;
    if (qi >= Tq) continue;
    const float inv = 1.f / l[i];
    T* orow = out + (b * Tq + qi) * ldo + int64_t(h) * D;
#pragma unroll
    for (int j = 0; j < DJ; j++) orow[tx + 16 * j] = from_f32<T>(o[i][j] * inv);
    if (lse && tx == 0) lse[(b * nh + h) * Tq + qi] = m[i] + __logf(l[i]);
  }
}

// ---------------------------------------------------------------------------------------------
// Backward. Dsum[b, h, i] = sum_d dO[i, d] * O[i, d] (FlashAttention-2's D), then
//   P = exp(S - lse),  dP = dO V^T,  dS = P (dP - Dsum),  dV += P^T dO,  dK += dS^T Q s,  dQ += dS K s.

template <typename T>
__global__ void attn_bwd_dsum(float* Dsum, const T* dout, const T* out, int64_t rows, int64_t Tq, int nh, int hd) {
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);  // (b*nh + h)*Tq + i
  if (row >= rows) return;
  const int64_t i = row % Tq, h = (row / Tq) % nh, b = row / (Tq * nh);
  const int64_t off = (b * Tq + i) * int64_t(nh) * hd + h * hd;
  float s = 0.f;
  for (int d = lane; d < hd; d += 32) s += to_f32(dout[off + d]) * to_f32(out[off + d]);
  s = warp_sum(s);
  if (lane == 0) Dsum[row] = s;
}

template <int D, int BR, int BC>
constexpr size_t dkdv_smem_bytes() {
  return sizeof(float) * (size_t(2 * BC + 2 * BR) * (D + 1) + size_t(2 * BR) * (BC + 1) + 2 * BR);
}

// Block = (key tile of BC rows, kv head, batch): owns dK and dV of those keys; loops over the query
// heads of its group and the query tiles that can see the keys.
template <typename T, int D, int BR, int BC>
__global__ void __launch_bounds__(kThreads)
    attn_bwd_dkdv_tiled(T* dk, T* dv, const T* dout, const float* lse, const float* Dsum, const T* q, int64_t ldq,
                        const T* k, const T* v, int64_t ldkv, int64_t Tq, int64_t Tk, int64_t p0, int nh, int group,
                        float scale) {
  constexpr int TM = BR / 16, TN = BC / 16, TC = BC / 16, DJ = D / 16, LD = D + 1, LP = BC + 1;
  SFT_DYNAMIC_SMEM(float, smem);
  float* Ks = smem;            // [BC][LD]
  float* Vs = Ks + BC * LD;    // [BC][LD]
  float* Qs = Vs + BC * LD;    // [BR][LD], scaled
  float* dOs = Qs + BR * LD;   // [BR][LD]
  float* Ps = dOs + BR * LD;   // [BR][LP]
  float* dSs = Ps + BR * LP;   // [BR][LP]
  float* Ls = dSs + BR * LP;   // [BR]
  float* Ds = Ls + BR;         // [BR]
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int kvh = blockIdx.y;
  const int64_t b = blockIdx.z, k0 = int64_t(blockIdx.x) * BC;
  const int64_t ldo = int64_t(nh) * D;
  load_rows<T, D>(Ks, LD, k + b * Tk * ldkv + int64_t(kvh) * D, ldkv, k0, BC, Tk, 1.f);
  load_rows<T, D>(Vs, LD, v + b * Tk * ldkv + int64_t(kvh) * D, ldkv, k0, BC, Tk, 1.f);

  float dka[TC][DJ], dva[TC][DJ];
#pragma unroll
  for (int c = 0; c < TC; c++)
#pragma unroll
    for (int j = 0; j < DJ; j++) dka[c][j] = dva[c][j] = 0.f;

  // Query i sees key k0 when p0 + i >= k0: earlier query tiles contribute nothing.
  const int64_t i_first = k0 - p0 > 0 ? k0 - p0 : 0;
  const int64_t q_start = (i_first / BR) * BR;
  for (int hh = 0; hh < group; hh++) {
    const int h = kvh * group + hh;
    const float* lse_h = lse + (b * nh + h) * Tq;
    const float* ds_h = Dsum + (b * nh + h) * Tq;
    for (int64_t q0 = q_start; q0 < Tq; q0 += BR) {
      __syncthreads();  // previous tile's readers are done (and Ks/Vs are complete)
      load_rows<T, D>(Qs, LD, q + b * Tq * ldq + int64_t(h) * D, ldq, q0, BR, Tq, scale);
      load_rows<T, D>(dOs, LD, dout + b * Tq * ldo + int64_t(h) * D, ldo, q0, BR, Tq, 1.f);
      for (int r = threadIdx.x; r < BR; r += kThreads) {
        const bool ok = q0 + r < Tq;
        Ls[r] = ok ? lse_h[q0 + r] : INFINITY;
        Ds[r] = ok ? ds_h[q0 + r] : 0.f;
      }
      __syncthreads();
      float s[TM][TN], dp[TM][TN];
#pragma unroll
      for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++) s[i][j] = dp[i][j] = 0.f;
#pragma unroll 4
      for (int d = 0; d < D; d++) {
        float qa[TM], oa[TM], kk[TN], vv[TN];
#pragma unroll
        for (int i = 0; i < TM; i++) {
          qa[i] = Qs[(ty + 16 * i) * LD + d];
          oa[i] = dOs[(ty + 16 * i) * LD + d];
        }
#pragma unroll
        for (int j = 0; j < TN; j++) {
          kk[j] = Ks[(tx + 16 * j) * LD + d];
          vv[j] = Vs[(tx + 16 * j) * LD + d];
        }
#pragma unroll
        for (int i = 0; i < TM; i++)
#pragma unroll
          for (int j = 0; j < TN; j++) {
            s[i][j] += qa[i] * kk[j];
            dp[i][j] += oa[i] * vv[j];
          }
      }
#pragma unroll
      for (int i = 0; i < TM; i++) {
        const int r = ty + 16 * i;
        const int64_t qpos = p0 + q0 + r;
#pragma unroll
        for (int j = 0; j < TN; j++) {
          const int c = tx + 16 * j;
          const bool visible = q0 + r < Tq && k0 + c < Tk && k0 + c <= qpos;
          const float p = visible ? __expf(s[i][j] - Ls[r]) : 0.f;
          Ps[r * LP + c] = p;
          dSs[r * LP + c] = p * (dp[i][j] - Ds[r]);
        }
      }
      __syncthreads();
#pragma unroll 2
      for (int r = 0; r < BR; r++) {
        float od[DJ], qd[DJ];
#pragma unroll
        for (int j = 0; j < DJ; j++) {
          od[j] = dOs[r * LD + tx + 16 * j];
          qd[j] = Qs[r * LD + tx + 16 * j];
        }
#pragma unroll
        for (int c = 0; c < TC; c++) {
          const float pr = Ps[r * LP + ty + 16 * c], dsr = dSs[r * LP + ty + 16 * c];
#pragma unroll
          for (int j = 0; j < DJ; j++) {
            dva[c][j] += pr * od[j];
            dka[c][j] += dsr * qd[j];  // Qs carries the 1/sqrt(hd) of dK = s dS^T Q
          }
        }
      }
    }
  }
#pragma unroll
  for (int c = 0; c < TC; c++) {
    const int64_t key = k0 + ty + 16 * c;
    if (key >= Tk) continue;
    T* dkr = dk + (b * Tk + key) * ldkv + int64_t(kvh) * D;
    T* dvr = dv + (b * Tk + key) * ldkv + int64_t(kvh) * D;
#pragma unroll
    for (int j = 0; j < DJ; j++) {
      const int d = tx + 16 * j;
      dkr[d] = from_f32<T>(to_f32(dkr[d]) + dka[c][j]);
      dvr[d] = from_f32<T>(to_f32(dvr[d]) + dva[c][j]);
    }
  }
}

template <int D, int BR, int BC>
constexpr size_t dq_smem_bytes() {
  return sizeof(float) * (size_t(2 * BR + 2 * BC) * (D + 1) + size_t(BR) * (BC + 1) + 2 * BR);
}

// Block = (query tile of BR rows, head, batch): owns dQ of those rows; loops over key tiles.
template <typename T, int D, int BR, int BC>
__global__ void __launch_bounds__(kThreads)
    attn_bwd_dq_tiled(T* dq, const T* dout, const float* lse, const float* Dsum, const T* q, int64_t ldq, const T* k,
                      const T* v, int64_t ldkv, int64_t Tq, int64_t Tk, int64_t p0, int nh, int group, float scale) {
  constexpr int TM = BR / 16, TN = BC / 16, DJ = D / 16, LD = D + 1, LP = BC + 1;
  SFT_DYNAMIC_SMEM(float, smem);
  float* Qs = smem;            // [BR][LD], scaled
  float* dOs = Qs + BR * LD;   // [BR][LD]
  float* Ks = dOs + BR * LD;   // [BC][LD]
  float* Vs = Ks + BC * LD;    // [BC][LD]
  float* dSs = Vs + BC * LD;   // [BR][LP]
  float* Ls = dSs + BR * LP;   // [BR]
  float* Ds = Ls + BR;         // [BR]
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int h = blockIdx.y, kvh = h / group;
  const int64_t b = blockIdx.z, q0 = int64_t(gridDim.x - 1 - blockIdx.x) * BR;  // long blocks first
  const int64_t ldo = int64_t(nh) * D;
  const T* kb = k + b * Tk * ldkv + int64_t(kvh) * D;
  const T* vb = v + b * Tk * ldkv + int64_t(kvh) * D;
  load_rows<T, D>(Qs, LD, q + b * Tq * ldq + int64_t(h) * D, ldq, q0, BR, Tq, scale);
  load_rows<T, D>(dOs, LD, dout + b * Tq * ldo + int64_t(h) * D, ldo, q0, BR, Tq, 1.f);
  for (int r = threadIdx.x; r < BR; r += kThreads) {
    const bool ok = q0 + r < Tq;
    Ls[r] = ok ? lse[(b * nh + h) * Tq + q0 + r] : INFINITY;
    Ds[r] = ok ? Dsum[(b * nh + h) * Tq + q0 + r] : 0.f;
  }
  float dqa[TM][DJ];
#pragma unroll
  for (int i = 0; i < TM; i++)
#pragma unroll
    for (int j = 0; j < DJ; j++) dqa[i][j] = 0.f;
  const int64_t q_end = q0 + BR < Tq ? q0 + BR : Tq;
  const int64_t n_keys = p0 + q_end;
  for (int64_t k0 = 0; k0 < n_keys; k0 += BC) {
    __syncthreads();
    load_rows<T, D>(Ks, LD, kb, ldkv, k0, BC, Tk, 1.f);
    load_rows<T, D>(Vs, LD, vb, ldkv, k0, BC, Tk, 1.f);
    __syncthreads();
    float s[TM][TN], dp[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
      for (int j = 0; j < TN; j++) s[i][j] = dp[i][j] = 0.f;
#pragma unroll 4
    for (int d = 0; d < D; d++) {
      float qa[TM], oa[TM], kk[TN], vv[TN];
#pragma unroll
      for (int i = 0; i < TM; i++) {
        qa[i] = Qs[(ty + 16 * i) * LD + d];
        oa[i] = dOs[(ty + 16 * i) * LD + d];
      }
#pragma unroll
      for (int j = 0; j < TN; j++) {
        kk[j] = Ks[(tx + 16 * j) * LD + d];
        vv[j] = Vs[(tx + 16 * j) * LD + d];
      }
#pragma unroll
      for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++) {
          s[i][j] += qa[i] * kk[j];
          dp[i][j] += oa[i] * vv[j];
        }
    }
#pragma unroll
    for (int i = 0; i < TM; i++) {
      const int r = ty + 16 * i;
      const int64_t qpos = p0 + q0 + r;
#pragma unroll
      for (int j = 0; j < TN; j++) {
        const int c = tx + 16 * j;
        const bool visible = q0 + r < Tq && k0 + c < Tk && k0 + c <= qpos;
        const float p = visible ? __expf(s[i][j] - Ls[r]) : 0.f;
        dSs[r * LP + c] = p * (dp[i][j] - Ds[r]);
      }
    }
    __syncthreads();
#pragma unroll 4
    for (int c = 0; c < BC; c++) {
      float dsv[TM], kv[DJ];
#pragma unroll
      for (int i = 0; i < TM; i++) dsv[i] = dSs[(ty + 16 * i) * LP + c];
#pragma unroll
      for (int j = 0; j < DJ; j++) kv[j] = Ks[c * LD + tx + 16 * j];
#pragma unroll
      for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < DJ; j++) dqa[i][j] += dsv[i] * kv[j];
    }
  }
#pragma unroll
  for (int i = 0; i < TM; i++) {
    const int64_t qi = q0 + ty + 16 * i;
    if (qi >= Tq) continue;
    T* dqr = dq + (b * Tq + qi) * ldq + int64_t(h) * D;
#pragma unroll
    for (int j = 0; j < DJ; j++) {
      const int d = tx + 16 * j;
      dqr[d] = from_f32<T>(to_f32(dqr[d]) + dqa[i][j] * scale);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Generic kernels: one warp per row, lane owns d = lane + 32 u (hd <= 256), keys one at a time.
// Head h's q (and dq) is at column h*qhs of its row, kv head g's k/v (and dk/dv) at g*kvhs (hd for
// the GQA layout). With slopes (ALiBi, group 1), score(i, j) = q_i.k_j s + slopes[h] * j: the key's
// absolute position, as the CPU's; lse is the logsumexp of these biased scores, so the backward's
// P = exp(score - lse) needs the same bias added back.

constexpr int kGenU = 8;
constexpr int kGenWarps = 4;

template <typename T>
__device__ __forceinline__ void load_row_u(float (&x)[kGenU], const T* src, int hd, float mul) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int u = 0; u < kGenU; u++) {
    const int d = lane + 32 * u;
    x[u] = d < hd ? to_f32(src[d]) * mul : 0.f;
  }
}

template <typename T>
__device__ __forceinline__ float dot_u(const float (&x)[kGenU], const T* src, int hd) {
  const int lane = threadIdx.x & 31;
  float s = 0.f;
#pragma unroll
  for (int u = 0; u < kGenU; u++) {
    const int d = lane + 32 * u;
    if (d < hd) s += x[u] * to_f32(src[d]);
  }
  return warp_sum(s);
}

template <typename T>
__global__ void attn_fwd_generic(T* out, float* lse, const T* q, int64_t ldq, int64_t qhs, const T* k, const T* v,
                                 int64_t ldkv, int64_t kvhs, const float* slopes, int64_t rows, int64_t Tq, int64_t Tk,
                                 int64_t p0, int nh, int group, int hd, float scale) {
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kGenWarps + (threadIdx.x >> 5);  // (b*nh + h)*Tq + i
  if (row >= rows) return;
  const int64_t i = row % Tq, h = (row / Tq) % nh, b = row / (Tq * nh), kvh = h / group;
  const float slope = slopes ? slopes[h] : 0.f;
  float qv[kGenU], o[kGenU];
  load_row_u(qv, q + (b * Tq + i) * ldq + h * qhs, hd, scale);
#pragma unroll
  for (int u = 0; u < kGenU; u++) o[u] = 0.f;
  float m = -INFINITY, l = 0.f;
  for (int64_t j = 0; j <= p0 + i; j++) {
    const T* kj = k + (b * Tk + j) * ldkv + kvh * kvhs;
    const T* vj = v + (b * Tk + j) * ldkv + kvh * kvhs;
    const float s = dot_u(qv, kj, hd) + slope * float(j);
    const float m_new = fmaxf(m, s);
    const float alpha = __expf(m - m_new), p = __expf(s - m_new);
    l = l * alpha + p;
#pragma unroll
    for (int u = 0; u < kGenU; u++) {
      const int d = lane + 32 * u;
      if (d < hd) o[u] = o[u] * alpha + p * to_f32(vj[d]);
    }
    m = m_new;
  }
  T* orow = out + (b * Tq + i) * int64_t(nh) * hd + h * hd;
  const float inv = 1.f / l;
#pragma unroll
  for (int u = 0; u < kGenU; u++) {
    const int d = lane + 32 * u;
    if (d < hd) orow[d] = from_f32<T>(o[u] * inv);
  }
  if (lse && lane == 0) lse[row] = m + __logf(l);
}

template <typename T>
__global__ void attn_bwd_dq_generic(T* dq, const T* dout, const float* lse, const float* Dsum, const T* q,
                                    int64_t ldq, int64_t qhs, const T* k, const T* v, int64_t ldkv, int64_t kvhs,
                                    const float* slopes, int64_t rows, int64_t Tq, int64_t Tk, int64_t p0, int nh,
                                    int group, int hd, float scale) {
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kGenWarps + (threadIdx.x >> 5);  // (b*nh + h)*Tq + i
  if (row >= rows) return;
  const int64_t i = row % Tq, h = (row / Tq) % nh, b = row / (Tq * nh), kvh = h / group;
  const float slope = slopes ? slopes[h] : 0.f;
  float qv[kGenU], dov[kGenU], acc[kGenU];
  load_row_u(qv, q + (b * Tq + i) * ldq + h * qhs, hd, scale);
  load_row_u(dov, dout + (b * Tq + i) * int64_t(nh) * hd + h * hd, hd, 1.f);
#pragma unroll
  for (int u = 0; u < kGenU; u++) acc[u] = 0.f;
  const float L = lse[row], Dd = Dsum[row];
  for (int64_t j = 0; j <= p0 + i; j++) {
    const T* kj = k + (b * Tk + j) * ldkv + kvh * kvhs;
    const float p = __expf(dot_u(qv, kj, hd) + slope * float(j) - L);
    const float ds = p * (dot_u(dov, v + (b * Tk + j) * ldkv + kvh * kvhs, hd) - Dd);
#pragma unroll
    for (int u = 0; u < kGenU; u++) {
      const int d = lane + 32 * u;
      if (d < hd) acc[u] += ds * to_f32(kj[d]);
    }
  }
  T* dqr = dq + (b * Tq + i) * ldq + h * qhs;
#pragma unroll
  for (int u = 0; u < kGenU; u++) {
    const int d = lane + 32 * u;
    if (d < hd) dqr[d] = from_f32<T>(to_f32(dqr[d]) + acc[u] * scale);
  }
}

template <typename T>
__global__ void attn_bwd_dkdv_generic(T* dk, T* dv, const T* dout, const float* lse, const float* Dsum, const T* q,
                                      int64_t ldq, int64_t qhs, const T* k, const T* v, int64_t ldkv, int64_t kvhs,
                                      const float* slopes, int64_t rows, int64_t Tq, int64_t Tk, int64_t p0, int nh,
                                      int nkv, int group, int hd, float scale) {
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kGenWarps + (threadIdx.x >> 5);  // (b*nkv + kvh)*Tk + j
  if (row >= rows) return;
  const int64_t j = row % Tk, kvh = (row / Tk) % nkv, b = row / (Tk * nkv);
  float kv[kGenU], vv[kGenU], dka[kGenU], dva[kGenU];
  load_row_u(kv, k + (b * Tk + j) * ldkv + kvh * kvhs, hd, 1.f);
  load_row_u(vv, v + (b * Tk + j) * ldkv + kvh * kvhs, hd, 1.f);
#pragma unroll
  for (int u = 0; u < kGenU; u++) dka[u] = dva[u] = 0.f;
  const int64_t i_first = j - p0 > 0 ? j - p0 : 0;
  for (int64_t h = kvh * group; h < (kvh + 1) * group; h++) {
    const float bias = slopes ? slopes[h] * float(j) : 0.f;
    for (int64_t i = i_first; i < Tq; i++) {
      const T* qi = q + (b * Tq + i) * ldq + h * qhs;
      const T* doi = dout + (b * Tq + i) * int64_t(nh) * hd + h * hd;
      const int64_t r = (b * nh + h) * Tq + i;
      const float p = __expf(dot_u(kv, qi, hd) * scale + bias - lse[r]);
      const float ds = p * (dot_u(vv, doi, hd) - Dsum[r]);
#pragma unroll
      for (int u = 0; u < kGenU; u++) {
        const int d = lane + 32 * u;
        if (d < hd) {
          dva[u] += p * to_f32(doi[d]);
          dka[u] += ds * to_f32(qi[d]);
        }
      }
    }
  }
  T* dkr = dk + (b * Tk + j) * ldkv + kvh * kvhs;
  T* dvr = dv + (b * Tk + j) * ldkv + kvh * kvhs;
#pragma unroll
  for (int u = 0; u < kGenU; u++) {
    const int d = lane + 32 * u;
    if (d < hd) {
      dkr[d] = from_f32<T>(to_f32(dkr[d]) + dka[u] * scale);
      dvr[d] = from_f32<T>(to_f32(dvr[d]) + dva[u]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Launchers.

void check_shape(int64_t Tq, int64_t Tk, int64_t p0, int nh, int nkv, int hd) {
  if (nkv <= 0 || nh % nkv != 0)
    throw std::runtime_error("attention: nh (" + std::to_string(nh) + ") must be a multiple of nkv (" +
                             std::to_string(nkv) + ")");
  if (Tk < p0 + Tq)
    throw std::runtime_error("attention: Tk (" + std::to_string(Tk) + ") < p0 + Tq (" + std::to_string(p0 + Tq) + ")");
  if (hd <= 0 || hd > 32 * kGenU)
    throw std::runtime_error("attention: head_dim " + std::to_string(hd) + " is not supported (1..256)");
}

template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  SFT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

template <typename T, int D, int BR, int BC>
void fwd_tiled(T* out, float* lse, const T* q, int64_t ldq, const T* k, const T* v, int64_t ldkv, int64_t B,
               int64_t Tq, int64_t Tk, int64_t p0, int nh, int nkv, cudaStream_t stream) {
  constexpr size_t smem = fwd_smem_bytes<D, BR, BC>();
  auto kernel = attn_fwd_tiled<T, D, BR, BC>;
  allow_smem(kernel, smem);
  const dim3 grid(unsigned((Tq + BR - 1) / BR), unsigned(nh), unsigned(B));
  SFT_LAUNCH(grid, kThreads, smem, stream, kernel)(out, lse, q, ldq, k, v, ldkv, Tq, Tk, p0, nh, nh / nkv,
                                          1.f / sqrtf(float(D)));
  SFT_CUDA_CHECK_LAUNCH("attention_forward tiled");
}

// Tile sizes per head dim: forward (BR, BC), dK/dV (BR, BC), dQ (BR, BC).
template <typename T, int D, int BR_KV, int BC_KV, int BR_Q, int BC_Q>
void bwd_tiled(T* dq, T* dk, T* dv, const T* dout, const float* lse, const float* Dsum, const T* q, int64_t ldq,
               const T* k, const T* v, int64_t ldkv, int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh, int nkv,
               cudaStream_t stream) {
  const float scale = 1.f / sqrtf(float(D));
  {
    constexpr size_t smem = dkdv_smem_bytes<D, BR_KV, BC_KV>();
    auto kernel = attn_bwd_dkdv_tiled<T, D, BR_KV, BC_KV>;
    allow_smem(kernel, smem);
    const dim3 grid(unsigned((Tk + BC_KV - 1) / BC_KV), unsigned(nkv), unsigned(B));
    SFT_LAUNCH(grid, kThreads, smem, stream, kernel)(dk, dv, dout, lse, Dsum, q, ldq, k, v, ldkv, Tq, Tk, p0, nh, nh / nkv,
                                            scale);
    SFT_CUDA_CHECK_LAUNCH("attention_backward dk/dv tiled");
  }
  {
    constexpr size_t smem = dq_smem_bytes<D, BR_Q, BC_Q>();
    auto kernel = attn_bwd_dq_tiled<T, D, BR_Q, BC_Q>;
    allow_smem(kernel, smem);
    const dim3 grid(unsigned((Tq + BR_Q - 1) / BR_Q), unsigned(nh), unsigned(B));
    SFT_LAUNCH(grid, kThreads, smem, stream, kernel)(dq, dout, lse, Dsum, q, ldq, k, v, ldkv, Tq, Tk, p0, nh, nh / nkv, scale);
    SFT_CUDA_CHECK_LAUNCH("attention_backward dq tiled");
  }
}

static_assert(fwd_smem_bytes<64, 64, 64>() <= 99 * 1024 && fwd_smem_bytes<128, 64, 32>() <= 99 * 1024,
              "forward tiles exceed the sm_86/sm_89 shared-memory limit");
static_assert(dkdv_smem_bytes<64, 32, 64>() <= 99 * 1024 && dkdv_smem_bytes<128, 32, 32>() <= 99 * 1024,
              "dK/dV tiles exceed the sm_86/sm_89 shared-memory limit");
static_assert(dq_smem_bytes<64, 64, 64>() <= 99 * 1024 && dq_smem_bytes<128, 32, 32>() <= 99 * 1024,
              "dQ tiles exceed the sm_86/sm_89 shared-memory limit");

// Dsum [B, nh, Tq] in a stream-ordered scratch buffer, then the given dK/dV + dQ kernels.
template <typename T, typename Run>
void with_dsum(const T* dout, const T* out, int64_t B, int64_t Tq, int nh, int hd, cudaStream_t stream, Run run) {
  const int64_t rows = B * nh * Tq;
  float* Dsum = nullptr;
  SFT_CUDA_CHECK(cudaMallocAsync(&Dsum, size_t(rows) * sizeof(float), stream));
  SFT_LAUNCH(unsigned((rows + 7) / 8), 256, 0, stream, attn_bwd_dsum<T>)(Dsum, dout, out, rows, Tq, nh, hd);
  SFT_CUDA_CHECK_LAUNCH("attention_backward dsum");
  run(Dsum);
  SFT_CUDA_CHECK(cudaFreeAsync(Dsum, stream));
}

// The generic kernels with head strides and optional slopes: what the generic GQA launchers
// (qhs = kvhs = hd, no slopes) and the ALiBi ones (nkv = nh) both run.
template <typename T>
void fwd_generic(T* out, float* lse, const T* q, int64_t ldq, int64_t qhs, const T* k, const T* v, int64_t ldkv,
                 int64_t kvhs, const float* slopes, int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh, int nkv,
                 int hd, cudaStream_t stream) {
  check_shape(Tq, Tk, p0, nh, nkv, hd);
  const int64_t rows = B * nh * Tq;
  if (rows <= 0) return;
  SFT_LAUNCH(unsigned((rows + kGenWarps - 1) / kGenWarps), 32 * kGenWarps, 0, stream, attn_fwd_generic<T>)(
      out, lse, q, ldq, qhs, k, v, ldkv, kvhs, slopes, rows, Tq, Tk, p0, nh, nh / nkv, hd, 1.f / sqrtf(float(hd)));
  SFT_CUDA_CHECK_LAUNCH("attention_forward generic");
}

template <typename T>
void bwd_generic(T* dq, T* dk, T* dv, const T* dout, const T* out, const float* lse, const T* q, int64_t ldq,
                 int64_t qhs, const T* k, const T* v, int64_t ldkv, int64_t kvhs, const float* slopes, int64_t B,
                 int64_t Tq, int64_t Tk, int64_t p0, int nh, int nkv, int hd, cudaStream_t stream) {
  check_shape(Tq, Tk, p0, nh, nkv, hd);
  if (B * nh * Tq <= 0) return;
  const float scale = 1.f / sqrtf(float(hd));
  with_dsum<T>(dout, out, B, Tq, nh, hd, stream, [&](const float* Dsum) {
    const int64_t kv_rows = B * nkv * Tk, q_rows = B * nh * Tq;
    SFT_LAUNCH(unsigned((kv_rows + kGenWarps - 1) / kGenWarps), 32 * kGenWarps, 0, stream, attn_bwd_dkdv_generic<T>)(
        dk, dv, dout, lse, Dsum, q, ldq, qhs, k, v, ldkv, kvhs, slopes, kv_rows, Tq, Tk, p0, nh, nkv, nh / nkv, hd,
        scale);
    SFT_CUDA_CHECK_LAUNCH("attention_backward dk/dv generic");
    SFT_LAUNCH(unsigned((q_rows + kGenWarps - 1) / kGenWarps), 32 * kGenWarps, 0, stream, attn_bwd_dq_generic<T>)(
        dq, dout, lse, Dsum, q, ldq, qhs, k, v, ldkv, kvhs, slopes, q_rows, Tq, Tk, p0, nh, nh / nkv, hd, scale);
    SFT_CUDA_CHECK_LAUNCH("attention_backward dq generic");
  });
}

}  // namespace

template <typename T>
void attention_forward_generic(T* out, float* lse, const T* q, int64_t ldq, const T* k, const T* v, int64_t ldkv,
                               int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh, int nkv, int hd,
                               cudaStream_t stream) {
  fwd_generic<T>(out, lse, q, ldq, hd, k, v, ldkv, hd, nullptr, B, Tq, Tk, p0, nh, nkv, hd, stream);
}

template <typename T>
void attention_backward_generic(T* dq, T* dk, T* dv, const T* dout, const T* out, const float* lse, const T* q,
                                int64_t ldq, const T* k, const T* v, int64_t ldkv, int64_t B, int64_t Tq, int64_t Tk,
                                int64_t p0, int nh, int nkv, int hd, cudaStream_t stream) {
  bwd_generic<T>(dq, dk, dv, dout, out, lse, q, ldq, hd, k, v, ldkv, hd, nullptr, B, Tq, Tk, p0, nh, nkv, hd, stream);
}

template <typename T>
void alibi_attention_forward(T* out, float* lse, const T* q, int64_t ldq, int64_t qhs, const T* k, const T* v,
                             int64_t ldkv, int64_t kvhs, const float* slopes, int64_t B, int64_t Tq, int64_t Tk,
                             int64_t p0, int nh, int hd, cudaStream_t stream) {
  fwd_generic<T>(out, lse, q, ldq, qhs, k, v, ldkv, kvhs, slopes, B, Tq, Tk, p0, nh, nh, hd, stream);
}

template <typename T>
void alibi_attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const float* lse, const T* q,
                              int64_t ldq, int64_t qhs, const T* k, const T* v, int64_t ldkv, int64_t kvhs,
                              const float* slopes, int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh, int hd,
                              cudaStream_t stream) {
  bwd_generic<T>(dq, dk, dv, dout, out, lse, q, ldq, qhs, k, v, ldkv, kvhs, slopes, B, Tq, Tk, p0, nh, nh, hd,
                 stream);
}

template <typename T>
void attention_forward(T* out, float* lse, const T* q, int64_t ldq, const T* k, const T* v, int64_t ldkv, int64_t B,
                       int64_t Tq, int64_t Tk, int64_t p0, int nh, int nkv, int hd, cudaStream_t stream) {
  check_shape(Tq, Tk, p0, nh, nkv, hd);
  if (B * nh * Tq <= 0) return;
  if constexpr (std::is_same_v<T, bf16>) {
    const void* ptrs[] = {out, q, k, v};
    if (attention_mma_fits(hd, ldq, ldkv, ptrs, 4)) {
      attention_forward_mma(out, lse, q, ldq, k, v, ldkv, B, Tq, Tk, p0, nh, nkv, hd, stream);
      return;
    }
  }
  if (hd == 64)
    fwd_tiled<T, 64, 64, 64>(out, lse, q, ldq, k, v, ldkv, B, Tq, Tk, p0, nh, nkv, stream);
  else if (hd == 128)
    fwd_tiled<T, 128, 64, 32>(out, lse, q, ldq, k, v, ldkv, B, Tq, Tk, p0, nh, nkv, stream);
  else
    attention_forward_generic<T>(out, lse, q, ldq, k, v, ldkv, B, Tq, Tk, p0, nh, nkv, hd, stream);
}

template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const float* lse, const T* q, int64_t ldq,
                        const T* k, const T* v, int64_t ldkv, int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh,
                        int nkv, int hd, cudaStream_t stream) {
  if (hd != 64 && hd != 128) {
    attention_backward_generic<T>(dq, dk, dv, dout, out, lse, q, ldq, k, v, ldkv, B, Tq, Tk, p0, nh, nkv, hd, stream);
    return;
  }
  check_shape(Tq, Tk, p0, nh, nkv, hd);
  if (B * nh * Tq <= 0) return;
  with_dsum<T>(dout, out, B, Tq, nh, hd, stream, [&](const float* Dsum) {
    if constexpr (std::is_same_v<T, bf16>) {
      const void* ptrs[] = {dq, dk, dv, dout, q, k, v};
      if (attention_mma_fits(hd, ldq, ldkv, ptrs, 7)) {
        attention_backward_mma(dq, dk, dv, dout, lse, Dsum, q, ldq, k, v, ldkv, B, Tq, Tk, p0, nh, nkv, hd, stream);
        return;
      }
    }
    if (hd == 64)
      bwd_tiled<T, 64, 32, 64, 64, 64>(dq, dk, dv, dout, lse, Dsum, q, ldq, k, v, ldkv, B, Tq, Tk, p0, nh, nkv, stream);
    else
      bwd_tiled<T, 128, 32, 32, 32, 32>(dq, dk, dv, dout, lse, Dsum, q, ldq, k, v, ldkv, B, Tq, Tk, p0, nh, nkv,
                                        stream);
  });
}

#define SFT_INSTANTIATE(T)                                                                                          \
  template void attention_forward<T>(T*, float*, const T*, int64_t, const T*, const T*, int64_t, int64_t, int64_t,   \
                                     int64_t, int64_t, int, int, int, cudaStream_t);                                 \
  template void attention_backward<T>(T*, T*, T*, const T*, const T*, const float*, const T*, int64_t, const T*,     \
                                      const T*, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int,          \
                                      cudaStream_t);                                                                 \
  template void attention_forward_generic<T>(T*, float*, const T*, int64_t, const T*, const T*, int64_t, int64_t,    \
                                             int64_t, int64_t, int64_t, int, int, int, cudaStream_t);                \
  template void attention_backward_generic<T>(T*, T*, T*, const T*, const T*, const float*, const T*, int64_t,       \
                                              const T*, const T*, int64_t, int64_t, int64_t, int64_t, int64_t, int,  \
                                              int, int, cudaStream_t);                                               \
  template void alibi_attention_forward<T>(T*, float*, const T*, int64_t, int64_t, const T*, const T*, int64_t,      \
                                           int64_t, const float*, int64_t, int64_t, int64_t, int64_t, int, int,      \
                                           cudaStream_t);                                                            \
  template void alibi_attention_backward<T>(T*, T*, T*, const T*, const T*, const float*, const T*, int64_t,         \
                                            int64_t, const T*, const T*, int64_t, int64_t, const float*, int64_t,    \
                                            int64_t, int64_t, int64_t, int, int, cudaStream_t);
SFT_INSTANTIATE(float)
SFT_INSTANTIATE(bf16)
#undef SFT_INSTANTIATE

}  // namespace sft::cuda
