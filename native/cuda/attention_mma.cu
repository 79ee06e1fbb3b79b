// Causal GQA attention on tensor cores, FlashAttention-2's way, for bf16 at head_dim 64 and 128:
// bf16 mma.sync m16n8k16 with fp32 accumulators, ldmatrix from shared memory, cp.async double
// buffering of the streamed tiles (mma.cuh has the instructions and their fragment layouts).
//
// Every block is 4 warps; each warp owns 16 rows of the block's tile and keeps its accumulators in
// registers (C fragments), so no seq x seq tensor exists anywhere, not even per block in shared
// memory: a softmax tile goes from the accumulators of one product straight into the A fragments
// of the next (the C layout of two adjacent n-tiles is the A layout of one k-step).
//  - forward: block = 64 queries of one head; K/V tiles of BC keys stream through; online softmax
//    in base 2 (scores scaled by log2(e)/sqrt(hd)), logsumexp saved (natural log, as the SIMT
//    kernels and the CPU's).
//  - dK/dV: block = 64 keys of one kv head; the Q/dO tiles of every query head of its group stream
//    through. It computes S^T = K Q^T and dP^T = V dO^T, so that P^T and dS^T are already in the
//    A-fragment layout dV += P^T dO and dK += dS^T Q need.
//  - dQ: block = 64 queries of one head; K/V tiles stream through; P and dS are recomputed and
//    dQ += dS K. A second pass instead of fp32 atomics: every output element is summed by one
//    thread in a fixed order, so the backward is deterministic (bit for bit, as the tests require)
//    at the price of recomputing Q K^T and dO V^T once more (7 tile products instead of 5).
// Shared-memory tiles are [rows][hd] bf16 with the 16-byte chunks of row r XOR-swizzled by r % 8,
// so the 8 rows one ldmatrix matrix reads sit in 8 different bank groups.
//
// Future work (not needed for correctness): wgmma + TMA on sm_90, fp32-atomic dQ (FA2's 5
// products), a shared-memory epilogue for coalesced stores, tile sizes tuned on hardware.
// NOT YET RUN ON A GPU: checked under the CPU emulator (test/cuda/emu) against the CPU backend.
#include "cuda/attention_mma.cuh"

#include "cuda/common.cuh"
#include "cuda/mma.cuh"

namespace sft::cuda {
namespace {

constexpr int kWarps = 4, kThreads = 32 * kWarps, kRows = 16 * kWarps;  // rows per block tile
constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;

// Element offset of (row r, column c) in a swizzled [rows][D] tile; c is a multiple of 8.
template <int D>
__device__ __forceinline__ int swz(int r, int c) {
  return r * D + ((((c >> 3) ^ (r & 7))) << 3);
}

// Queues cp.async copies of rows row0 .. row0 + R - 1 of a global [*, ld] bf16 matrix into a
// swizzled tile; rows at or past `limit` are zero-filled (so masked keys multiply zeros, not NaN).
template <int R, int D>
__device__ __forceinline__ void load_tile(bf16* s, const bf16* g, int64_t ld, int64_t row0, int64_t limit) {
  constexpr int kChunks = D / 8;
  for (int idx = threadIdx.x; idx < R * kChunks; idx += kThreads) {
    const int r = idx / kChunks, c = (idx % kChunks) * 8;
    const int64_t row = row0 + r;
    const bool ok = row < limit;
    cp_async_16(s + swz<D>(r, c), ok ? g + row * ld + c : g, ok);
  }
}

// ldmatrix row addresses (lane = threadIdx.x % 32) for the three operand shapes:
// A fragment of rows m0..m0+15, columns k0..k0+15 of a row-major [m][k] tile.
template <int D>
__device__ __forceinline__ void load_a(uint32_t* a, const bf16* s, int m0, int k0, int lane) {
  ldmatrix_x4(a, s + swz<D>(m0 + (lane & 15), k0 + ((lane >> 4) << 3)));
}
// B fragments of two n-tiles (n0, n0 + 8) x k0..k0+15 from an [n][k] tile (B = tile^T):
// b[0..1] for n0, b[2..3] for n0 + 8.
template <int D>
__device__ __forceinline__ void load_b(uint32_t* b, const bf16* s, int n0, int k0, int lane) {
  ldmatrix_x4(b, s + swz<D>(n0 + (lane & 7) + ((lane >> 4) << 3), k0 + (((lane >> 3) & 1) << 3)));
}
// B fragments of two n-tiles (n0, n0 + 8) x k0..k0+15 from a [k][n] tile (B = tile).
template <int D>
__device__ __forceinline__ void load_b_trans(uint32_t* b, const bf16* s, int k0, int n0, int lane) {
  ldmatrix_x4_trans(b, s + swz<D>(k0 + (lane & 7) + (((lane >> 3) & 1) << 3), n0 + ((lane >> 4) << 3)));
}

// The A fragment of k-step kc from the C fragments of n-tiles 2kc and 2kc + 1.
__device__ __forceinline__ void c_to_a(uint32_t* a, const float* c0, const float* c1) {
  a[0] = pack_bf16x2(c0[0], c0[1]);
  a[1] = pack_bf16x2(c0[2], c0[3]);
  a[2] = pack_bf16x2(c1[0], c1[1]);
  a[3] = pack_bf16x2(c1[2], c1[3]);
}

// dst[0..1] += (a, b) * mul as bf16: two adjacent elements of a row (4-byte aligned).
__device__ __forceinline__ void add_pair(bf16* dst, float a, float b, float mul) {
  dst[0] = from_f32<bf16>(to_f32(dst[0]) + a * mul);
  dst[1] = from_f32<bf16>(to_f32(dst[1]) + b * mul);
}

template <int D, int BC>
constexpr size_t fwd_smem() {
  return sizeof(bf16) * size_t(D) * (kRows + 4 * BC);  // Q, K x 2, V x 2
}
template <int D, int BR>
constexpr size_t dkdv_smem() {
  return sizeof(bf16) * size_t(D) * (2 * kRows + 4 * BR);  // K, V, Q x 2, dO x 2
}
template <int D, int BC>
constexpr size_t dq_smem() {
  return sizeof(bf16) * size_t(D) * (2 * kRows + 4 * BC);  // Q, dO, K x 2, V x 2
}

// ---------------------------------------------------------------------------------------------
// Forward. grid = (query tiles, nh, B), last query tiles first (they see the most keys).

template <int D, int BC>
__global__ void __launch_bounds__(kThreads)
    attn_fwd_mma(bf16* out, float* lse, const bf16* q, int64_t ldq, const bf16* k, const bf16* v, int64_t ldkv,
                 int64_t Tq, int64_t Tk, int64_t p0, int nh, int group, float scale_log2) {
  constexpr int KD = D / 16, NT = BC / 8, DT = D / 8;
  SFT_DYNAMIC_SMEM(bf16, smem);
  bf16* Qs = smem;
  bf16* Ks = Qs + kRows * D;  // [2][BC][D]
  bf16* Vs = Ks + 2 * BC * D;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int h = blockIdx.y, kvh = h / group;
  const int64_t b = blockIdx.z, q0 = int64_t(gridDim.x - 1 - blockIdx.x) * kRows;
  const bf16* qb = q + b * Tq * ldq + int64_t(h) * D;
  const bf16* kb = k + b * Tk * ldkv + int64_t(kvh) * D;
  const bf16* vb = v + b * Tk * ldkv + int64_t(kvh) * D;
  const int64_t q_end = q0 + kRows < Tq ? q0 + kRows : Tq;
  const int n_blocks = int((p0 + q_end + BC - 1) / BC);  // the last query sees keys < p0 + q_end

  load_tile<kRows, D>(Qs, qb, ldq, q0, Tq);
  load_tile<BC, D>(Ks, kb, ldkv, 0, Tk);
  load_tile<BC, D>(Vs, vb, ldkv, 0, Tk);
  cp_async_commit();

  const int64_t pos0 = p0 + q0 + warp * 16 + g;  // positions of this lane's rows: pos0, pos0 + 8
  const int64_t warp_last = p0 + q0 + warp * 16 + 15;
  uint32_t qf[KD][4];
  float o[DT][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
#pragma unroll
  for (int i = 0; i < DT; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;

  for (int j = 0; j < n_blocks; j++) {
    const bf16* Kb = Ks + (j & 1) * BC * D;
    const bf16* Vb = Vs + (j & 1) * BC * D;
    if (j + 1 < n_blocks) {
      load_tile<BC, D>(Ks + ((j + 1) & 1) * BC * D, kb, ldkv, int64_t(j + 1) * BC, Tk);
      load_tile<BC, D>(Vs + ((j + 1) & 1) * BC * D, vb, ldkv, int64_t(j + 1) * BC, Tk);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < KD; kk++) load_a<D>(qf[kk], Qs, warp * 16, kk * 16, lane);
    }
    const int64_t k0 = int64_t(j) * BC;
    if (k0 <= warp_last) {  // warp-uniform: some key of the tile is visible to some row of the warp
      float s[NT][4];
#pragma unroll
      for (int i = 0; i < NT; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < KD; kk++)
#pragma unroll
        for (int np = 0; np < NT / 2; np++) {
          uint32_t bk[4];
          load_b<D>(bk, Kb, np * 16, kk * 16, lane);
          mma_bf16_16x8x16(s[2 * np], qf[kk], bk);
          mma_bf16_16x8x16(s[2 * np + 1], qf[kk], bk + 2);
        }
#pragma unroll
      for (int r = 0; r < 2; r++) {
        const int64_t pos = pos0 + 8 * r;
        float mx = -INFINITY;
#pragma unroll
        for (int i = 0; i < NT; i++)
#pragma unroll
          for (int e = 0; e < 2; e++) {
            const int64_t key = k0 + i * 8 + 2 * t + e;
            const float x = key <= pos ? s[i][2 * r + e] * scale_log2 : -INFINITY;  // causal; hides keys >= Tk
            s[i][2 * r + e] = x;
            mx = fmaxf(mx, x);
          }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m[r], mx);
        const float base = m_new == -INFINITY ? 0.f : m_new;  // no visible key yet: all p are 0
        const float alpha = exp2f(m[r] - base);
        float rs = 0.f;
#pragma unroll
        for (int i = 0; i < NT; i++)
#pragma unroll
          for (int e = 0; e < 2; e++) {
            const float p = exp2f(s[i][2 * r + e] - base);
            s[i][2 * r + e] = p;
            rs += p;
          }
        l[r] = l[r] * alpha + rs;  // this lane's part of the row sum; reduced at the end
        m[r] = m_new;
#pragma unroll
        for (int i = 0; i < DT; i++) o[i][2 * r] *= alpha, o[i][2 * r + 1] *= alpha;
      }
#pragma unroll
      for (int kc = 0; kc < BC / 16; kc++) {
        uint32_t pa[4];
        c_to_a(pa, s[2 * kc], s[2 * kc + 1]);
#pragma unroll
        for (int dp = 0; dp < DT / 2; dp++) {
          uint32_t bv[4];
          load_b_trans<D>(bv, Vb, kc * 16, dp * 16, lane);
          mma_bf16_16x8x16(o[2 * dp], pa, bv);
          mma_bf16_16x8x16(o[2 * dp + 1], pa, bv + 2);
        }
      }
    }
    __syncthreads();  // every warp is done with this buffer before iteration j + 1 refills it
  }

  const int64_t ldo = int64_t(nh) * D;
#pragma unroll
  for (int r = 0; r < 2; r++) {
    float sum = l[r];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const int64_t qi = q0 + warp * 16 + g + 8 * r;
    if (qi >= Tq) continue;
    const float inv = 1.f / sum;
    bf16* orow = out + (b * Tq + qi) * ldo + int64_t(h) * D + 2 * t;
#pragma unroll
    for (int i = 0; i < DT; i++) {
      orow[i * 8] = from_f32<bf16>(o[i][2 * r] * inv);
      orow[i * 8 + 1] = from_f32<bf16>(o[i][2 * r + 1] * inv);
    }
    if (lse && t == 0) lse[(b * nh + h) * Tq + qi] = (m[r] + log2f(sum)) * kLn2;
  }
}

// ---------------------------------------------------------------------------------------------
// dK/dV. grid = (key tiles, nkv, B). Streams the (query head, query tile) pairs that can see the
// block's keys, heads of the group in order, then query tiles in order.

template <int D, int BR>
__global__ void __launch_bounds__(kThreads)
    attn_bwd_dkdv_mma(bf16* dk, bf16* dv, const bf16* dout, const float* lse, const float* Dsum, const bf16* q,
                      int64_t ldq, const bf16* k, const bf16* v, int64_t ldkv, int64_t Tq, int64_t Tk, int64_t p0,
                      int nh, int group, float scale_log2, float scale) {
  constexpr int KD = D / 16, NQ = BR / 8, DT = D / 8;
  SFT_DYNAMIC_SMEM(bf16, smem);
  bf16* Ks = smem;
  bf16* Vs = Ks + kRows * D;
  bf16* Qs = Vs + kRows * D;  // [2][BR][D]
  bf16* dOs = Qs + 2 * BR * D;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int kvh = blockIdx.y;
  const int64_t b = blockIdx.z, k0 = int64_t(blockIdx.x) * kRows, ldo = int64_t(nh) * D;
  // Query i sees key k0 when p0 + i >= k0: earlier query tiles contribute nothing.
  const int64_t i_first = k0 - p0 > 0 ? k0 - p0 : 0;
  const int64_t q_start = (i_first / BR) * BR;
  const int nq = q_start < Tq ? int((Tq - q_start + BR - 1) / BR) : 0;
  const int n_iter = nq * group;
  auto issue = [&](int it, int buf) {
    const int h = kvh * group + it / nq;
    const int64_t qt = q_start + int64_t(it % nq) * BR;
    load_tile<BR, D>(Qs + buf * BR * D, q + b * Tq * ldq + int64_t(h) * D, ldq, qt, Tq);
    load_tile<BR, D>(dOs + buf * BR * D, dout + b * Tq * ldo + int64_t(h) * D, ldo, qt, Tq);
  };
  load_tile<kRows, D>(Ks, k + b * Tk * ldkv + int64_t(kvh) * D, ldkv, k0, Tk);
  load_tile<kRows, D>(Vs, v + b * Tk * ldkv + int64_t(kvh) * D, ldkv, k0, Tk);
  if (n_iter > 0) issue(0, 0);
  cp_async_commit();

  const int64_t key0 = k0 + warp * 16 + g;  // this lane's key rows: key0, key0 + 8
  float dka[DT][4], dva[DT][4];
#pragma unroll
  for (int i = 0; i < DT; i++)
#pragma unroll
    for (int e = 0; e < 4; e++) dka[i][e] = dva[i][e] = 0.f;

  for (int it = 0; it < n_iter; it++) {
    const int buf = it & 1;
    if (it + 1 < n_iter) {
      issue(it + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* Qb = Qs + buf * BR * D;
    const bf16* dOb = dOs + buf * BR * D;
    const int h = kvh * group + it / nq;
    const int64_t qt = q_start + int64_t(it % nq) * BR;
    if (k0 + warp * 16 <= p0 + qt + BR - 1) {  // warp-uniform: some query of the tile sees some key
      float st[NQ][4], dpt[NQ][4];
#pragma unroll
      for (int i = 0; i < NQ; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) st[i][e] = dpt[i][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < KD; kk++) {
        uint32_t ka[4], va[4];
        load_a<D>(ka, Ks, warp * 16, kk * 16, lane);
        load_a<D>(va, Vs, warp * 16, kk * 16, lane);
#pragma unroll
        for (int np = 0; np < NQ / 2; np++) {
          uint32_t bq[4], bo[4];
          load_b<D>(bq, Qb, np * 16, kk * 16, lane);
          mma_bf16_16x8x16(st[2 * np], ka, bq);
          mma_bf16_16x8x16(st[2 * np + 1], ka, bq + 2);
          load_b<D>(bo, dOb, np * 16, kk * 16, lane);
          mma_bf16_16x8x16(dpt[2 * np], va, bo);
          mma_bf16_16x8x16(dpt[2 * np + 1], va, bo + 2);
        }
      }
      const float* lse_h = lse + (b * nh + h) * Tq;
      const float* ds_h = Dsum + (b * nh + h) * Tq;
#pragma unroll
      for (int i = 0; i < NQ; i++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const int64_t qi = qt + i * 8 + 2 * t + e;
          const bool valid = qi < Tq;
          const float L = valid ? lse_h[qi] * kLog2e : 0.f, Dd = valid ? ds_h[qi] : 0.f;
#pragma unroll
          for (int r = 0; r < 2; r++) {
            const bool seen = valid && key0 + 8 * r <= p0 + qi;
            const float p = seen ? exp2f(st[i][2 * r + e] * scale_log2 - L) : 0.f;
            st[i][2 * r + e] = p;
            dpt[i][2 * r + e] = p * (dpt[i][2 * r + e] - Dd);
          }
        }
#pragma unroll
      for (int kc = 0; kc < BR / 16; kc++) {
        uint32_t pa[4], da[4];
        c_to_a(pa, st[2 * kc], st[2 * kc + 1]);
        c_to_a(da, dpt[2 * kc], dpt[2 * kc + 1]);
#pragma unroll
        for (int dp = 0; dp < DT / 2; dp++) {
          uint32_t bo[4], bq[4];
          load_b_trans<D>(bo, dOb, kc * 16, dp * 16, lane);
          mma_bf16_16x8x16(dva[2 * dp], pa, bo);
          mma_bf16_16x8x16(dva[2 * dp + 1], pa, bo + 2);
          load_b_trans<D>(bq, Qb, kc * 16, dp * 16, lane);
          mma_bf16_16x8x16(dka[2 * dp], da, bq);
          mma_bf16_16x8x16(dka[2 * dp + 1], da, bq + 2);
        }
      }
    }
    __syncthreads();  // every warp is done with this buffer before iteration it + 1 refills it
  }
  if (n_iter == 0) cp_async_wait<0>();  // K/V were loaded for nothing: land them before exit

#pragma unroll
  for (int r = 0; r < 2; r++) {
    const int64_t key = key0 + 8 * r;
    if (key >= Tk) continue;
    bf16* dkr = dk + (b * Tk + key) * ldkv + int64_t(kvh) * D + 2 * t;
    bf16* dvr = dv + (b * Tk + key) * ldkv + int64_t(kvh) * D + 2 * t;
#pragma unroll
    for (int i = 0; i < DT; i++) {
      add_pair(dkr + i * 8, dka[i][2 * r], dka[i][2 * r + 1], scale);
      add_pair(dvr + i * 8, dva[i][2 * r], dva[i][2 * r + 1], 1.f);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// dQ. grid = (query tiles, nh, B), last query tiles first.

template <int D, int BC>
__global__ void __launch_bounds__(kThreads)
    attn_bwd_dq_mma(bf16* dq, const bf16* dout, const float* lse, const float* Dsum, const bf16* q, int64_t ldq,
                    const bf16* k, const bf16* v, int64_t ldkv, int64_t Tq, int64_t Tk, int64_t p0, int nh, int group,
                    float scale_log2, float scale) {
  constexpr int KD = D / 16, NT = BC / 8, DT = D / 8;
  SFT_DYNAMIC_SMEM(bf16, smem);
  bf16* Qs = smem;
  bf16* dOs = Qs + kRows * D;
  bf16* Ks = dOs + kRows * D;  // [2][BC][D]
  bf16* Vs = Ks + 2 * BC * D;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int h = blockIdx.y, kvh = h / group;
  const int64_t b = blockIdx.z, q0 = int64_t(gridDim.x - 1 - blockIdx.x) * kRows, ldo = int64_t(nh) * D;
  const bf16* kb = k + b * Tk * ldkv + int64_t(kvh) * D;
  const bf16* vb = v + b * Tk * ldkv + int64_t(kvh) * D;
  const int64_t q_end = q0 + kRows < Tq ? q0 + kRows : Tq;
  const int n_blocks = int((p0 + q_end + BC - 1) / BC);

  load_tile<kRows, D>(Qs, q + b * Tq * ldq + int64_t(h) * D, ldq, q0, Tq);
  load_tile<kRows, D>(dOs, dout + b * Tq * ldo + int64_t(h) * D, ldo, q0, Tq);
  load_tile<BC, D>(Ks, kb, ldkv, 0, Tk);
  load_tile<BC, D>(Vs, vb, ldkv, 0, Tk);
  cp_async_commit();

  const int64_t i0 = q0 + warp * 16 + g;  // this lane's query rows: i0, i0 + 8
  const int64_t warp_last = p0 + q0 + warp * 16 + 15;
  float L[2], Dd[2];
#pragma unroll
  for (int r = 0; r < 2; r++) {
    const int64_t qi = i0 + 8 * r;
    L[r] = qi < Tq ? lse[(b * nh + h) * Tq + qi] * kLog2e : 0.f;
    Dd[r] = qi < Tq ? Dsum[(b * nh + h) * Tq + qi] : 0.f;
  }
  uint32_t qf[KD][4], of[KD][4];
  float dqa[DT][4];
#pragma unroll
  for (int i = 0; i < DT; i++) dqa[i][0] = dqa[i][1] = dqa[i][2] = dqa[i][3] = 0.f;

  for (int j = 0; j < n_blocks; j++) {
    const bf16* Kb = Ks + (j & 1) * BC * D;
    const bf16* Vb = Vs + (j & 1) * BC * D;
    if (j + 1 < n_blocks) {
      load_tile<BC, D>(Ks + ((j + 1) & 1) * BC * D, kb, ldkv, int64_t(j + 1) * BC, Tk);
      load_tile<BC, D>(Vs + ((j + 1) & 1) * BC * D, vb, ldkv, int64_t(j + 1) * BC, Tk);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < KD; kk++) {
        load_a<D>(qf[kk], Qs, warp * 16, kk * 16, lane);
        load_a<D>(of[kk], dOs, warp * 16, kk * 16, lane);
      }
    }
    const int64_t k0 = int64_t(j) * BC;
    if (k0 <= warp_last) {
      float s[NT][4], dp[NT][4];
#pragma unroll
      for (int i = 0; i < NT; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) s[i][e] = dp[i][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < KD; kk++)
#pragma unroll
        for (int np = 0; np < NT / 2; np++) {
          uint32_t bk[4], bv[4];
          load_b<D>(bk, Kb, np * 16, kk * 16, lane);
          mma_bf16_16x8x16(s[2 * np], qf[kk], bk);
          mma_bf16_16x8x16(s[2 * np + 1], qf[kk], bk + 2);
          load_b<D>(bv, Vb, np * 16, kk * 16, lane);
          mma_bf16_16x8x16(dp[2 * np], of[kk], bv);
          mma_bf16_16x8x16(dp[2 * np + 1], of[kk], bv + 2);
        }
#pragma unroll
      for (int i = 0; i < NT; i++)
#pragma unroll
        for (int r = 0; r < 2; r++)
#pragma unroll
          for (int e = 0; e < 2; e++) {
            const int64_t key = k0 + i * 8 + 2 * t + e, qi = i0 + 8 * r;
            const bool seen = qi < Tq && key <= p0 + qi;
            const float p = seen ? exp2f(s[i][2 * r + e] * scale_log2 - L[r]) : 0.f;
            dp[i][2 * r + e] = p * (dp[i][2 * r + e] - Dd[r]);
          }
#pragma unroll
      for (int kc = 0; kc < BC / 16; kc++) {
        uint32_t da[4];
        c_to_a(da, dp[2 * kc], dp[2 * kc + 1]);
#pragma unroll
        for (int dd = 0; dd < DT / 2; dd++) {
          uint32_t bk[4];
          load_b_trans<D>(bk, Kb, kc * 16, dd * 16, lane);
          mma_bf16_16x8x16(dqa[2 * dd], da, bk);
          mma_bf16_16x8x16(dqa[2 * dd + 1], da, bk + 2);
        }
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < 2; r++) {
    const int64_t qi = i0 + 8 * r;
    if (qi >= Tq) continue;
    bf16* dqr = dq + (b * Tq + qi) * ldq + int64_t(h) * D + 2 * t;
#pragma unroll
    for (int i = 0; i < DT; i++) add_pair(dqr + i * 8, dqa[i][2 * r], dqa[i][2 * r + 1], scale);
  }
}

// ---------------------------------------------------------------------------------------------
// Launchers. Tile sizes per head dim: forward BC keys per streamed tile; dK/dV BR queries; dQ BC
// keys. Chosen to keep registers under ~200 per thread (hd 128 accumulators alone are 64) and
// shared memory under 99 KiB (the sm_86/sm_89 per-block limit).
constexpr int kFwdBC64 = 64, kFwdBC128 = 64, kDkdvBR64 = 64, kDkdvBR128 = 32, kDqBC64 = 64, kDqBC128 = 32;
static_assert(fwd_smem<64, kFwdBC64>() <= 99 * 1024 && fwd_smem<128, kFwdBC128>() <= 99 * 1024, "forward smem");
static_assert(dkdv_smem<64, kDkdvBR64>() <= 99 * 1024 && dkdv_smem<128, kDkdvBR128>() <= 99 * 1024, "dK/dV smem");
static_assert(dq_smem<64, kDqBC64>() <= 99 * 1024 && dq_smem<128, kDqBC128>() <= 99 * 1024, "dQ smem");

template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  SFT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

template <int D, int BC>
void fwd(bf16* out, float* lse, const bf16* q, int64_t ldq, const bf16* k, const bf16* v, int64_t ldkv, int64_t B,
         int64_t Tq, int64_t Tk, int64_t p0, int nh, int nkv, cudaStream_t stream) {
  constexpr size_t smem = fwd_smem<D, BC>();
  auto kernel = attn_fwd_mma<D, BC>;
  allow_smem(kernel, smem);
  const dim3 grid(unsigned((Tq + kRows - 1) / kRows), unsigned(nh), unsigned(B));
  SFT_LAUNCH(grid, kThreads, smem, stream, kernel)(out, lse, q, ldq, k, v, ldkv, Tq, Tk, p0, nh, nh / nkv,
                                                   kLog2e / sqrtf(float(D)));
  SFT_CUDA_CHECK_LAUNCH("attention_forward mma");
}

template <int D, int BR, int BC>
void bwd(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const float* lse, const float* Dsum, const bf16* q,
         int64_t ldq, const bf16* k, const bf16* v, int64_t ldkv, int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh,
         int nkv, cudaStream_t stream) {
  const float scale = 1.f / sqrtf(float(D)), scale_log2 = kLog2e * scale;
  {
    constexpr size_t smem = dkdv_smem<D, BR>();
    auto kernel = attn_bwd_dkdv_mma<D, BR>;
    allow_smem(kernel, smem);
    const dim3 grid(unsigned((Tk + kRows - 1) / kRows), unsigned(nkv), unsigned(B));
    SFT_LAUNCH(grid, kThreads, smem, stream, kernel)(dk, dv, dout, lse, Dsum, q, ldq, k, v, ldkv, Tq, Tk, p0, nh,
                                                     nh / nkv, scale_log2, scale);
    SFT_CUDA_CHECK_LAUNCH("attention_backward dk/dv mma");
  }
  {
    constexpr size_t smem = dq_smem<D, BC>();
    auto kernel = attn_bwd_dq_mma<D, BC>;
    allow_smem(kernel, smem);
    const dim3 grid(unsigned((Tq + kRows - 1) / kRows), unsigned(nh), unsigned(B));
    SFT_LAUNCH(grid, kThreads, smem, stream, kernel)(dq, dout, lse, Dsum, q, ldq, k, v, ldkv, Tq, Tk, p0, nh,
                                                     nh / nkv, scale_log2, scale);
    SFT_CUDA_CHECK_LAUNCH("attention_backward dq mma");
  }
}

}  // namespace

bool attention_mma_fits(int hd, int64_t ldq, int64_t ldkv, const void* const* ptrs, int n_ptrs) {
  if (hd != 64 && hd != 128) return false;
  if (ldq % 8 != 0 || ldkv % 8 != 0) return false;
  for (int i = 0; i < n_ptrs; i++)
    if (reinterpret_cast<uintptr_t>(ptrs[i]) % 16 != 0) return false;
  return true;
}

void attention_forward_mma(bf16* out, float* lse, const bf16* q, int64_t ldq, const bf16* k, const bf16* v,
                           int64_t ldkv, int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh, int nkv, int hd,
                           cudaStream_t stream) {
  if (hd == 64)
    fwd<64, kFwdBC64>(out, lse, q, ldq, k, v, ldkv, B, Tq, Tk, p0, nh, nkv, stream);
  else
    fwd<128, kFwdBC128>(out, lse, q, ldq, k, v, ldkv, B, Tq, Tk, p0, nh, nkv, stream);
}

void attention_backward_mma(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const float* lse, const float* Dsum,
                            const bf16* q, int64_t ldq, const bf16* k, const bf16* v, int64_t ldkv, int64_t B,
                            int64_t Tq, int64_t Tk, int64_t p0, int nh, int nkv, int hd, cudaStream_t stream) {
  if (hd == 64)
    bwd<64, kDkdvBR64, kDqBC64>(dq, dk, dv, dout, lse, Dsum, q, ldq, k, v, ldkv, B, Tq, Tk, p0, nh, nkv, stream);
  else
    bwd<128, kDkdvBR128, kDqBC128>(dq, dk, dv, dout, lse, Dsum, q, ldq, k, v, ldkv, B, Tq, Tk, p0, nh, nkv, stream);
}

}  // namespace sft::cuda
