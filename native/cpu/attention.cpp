// Causal multi-head attention with grouped-query heads (nkv <= nh; query head h reads kv head
// h / (nh / nkv)), optionally with ALiBi biases (Bloom), tiled in the FlashAttention manner so that
// nothing of size Tq x Tk ever exists:
//   forward   per block of BQ queries, walk the visible blocks of BK keys with an online softmax
//             (running max m and sum l per row, the output rescaled when m grows); save only the
//             row's logsumexp lse = m + log l for the backward.
//   backward  FlashAttention-2's recomputation: D = rowsum(dY * Y) per row; per (key block, query
//             block) pair S = Q K^T s (+ bias), P = exp(S - lse), dV += P^T dY, dP = dY V^T,
//             dS = P * (dP - D), dQ += dS K s, dK += dS^T Q s (a constant bias changes nothing).
// The block products run the register-tiled micro-kernel of the CPU's instruction set (kernels.h
// attn_mm, chosen at run time as the GEMM's is) on operands packed into small zero-padded buffers;
// a block of K/V (BK x hd) and the score tile (BQ x BK) are 16 KiB each at hd 64 in fp32, so they
// stay in L1/L2.
// The backward packs whole heads instead (K^T, V^T, K s of its kv head; Q s, dY and the dQ sum of
// one query head: T x hd each, per thread), so each is packed once, not once per block pair.
// Blocks start at multiples of BQ/BK from 0 whatever the thread count, and each gradient row is
// summed by one thread in a fixed order: results are the same run to run and for any thread count.
// bf16 storage (T = bf16, A = Acc<T> = float): q, k, v and dY are widened to fp32 as they are packed
// (decoding's few rows widen each k/v row once), everything inside runs the fp32 kernels, lse is
// fp32, and the outputs and gradient rows are rounded once when written.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "core/threads.h"
#include "cpu/isa.h"
#include "cpu/ops.h"
#include "cpu/simd.h"

namespace sft::cpu {

namespace {

constexpr int64_t BQ = 64;  // queries per block
constexpr int64_t BK = 64;  // keys per block (a multiple of the micro-kernel's two vectors)
// Below this many query rows, dot products and axpys on K/V rows in place beat packing them.
constexpr int64_t kFewRows = 8;

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

template <typename T>
constexpr int64_t kLanes = kVecBytes / int64_t(sizeof(T));

// Head dim padded to whole strips of the block product's columns: the packed operands' row stride.
inline int64_t padded_hd(int hd) { return round_up(hd, kAttnPad); }

// C[M, N] (+)= op(A)[M, K] B[K, N]; op(A)[r, k] = A[r * lda + k], or A[k * lda + r] when TA (the
// transposed products of the backward, read in place). fp32 runs the register-tiled micro-kernel of
// the CPU's instruction set (kernels.h attn_mm: B and C padded to kAttnPad columns); double (the
// gradient checks) a plain loop summing k in the same order.
template <typename T, bool TA>
void mm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc,
        bool acc) {
  if constexpr (std::is_same<T, float>::value) {
    kernels().attn_mm(M, N, K, A, lda, TA, B, ldb, C, ldc, acc);
  } else {
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) {
        T sum = acc ? C[m * ldc + n] : T(0);
        for (int64_t k = 0; k < K; k++) sum += (TA ? A[k * lda + m] : A[m * lda + k]) * B[k * ldb + n];
        C[m * ldc + n] = sum;
      }
  }
}

// Where one (batch, head) finds its rows; the public forms differ only in the head strides.
template <typename T>
struct Layout {
  using A = Acc<T>;
  const T* q;
  int64_t ldq, qhs;
  const T* k;
  const T* v;
  int64_t ldkv, kvhs;
  const A* slopes;  // ALiBi, or null
  int64_t B, Tq, Tk, p0;
  int nh, nkv, hd;
  const T* qrow(int64_t b, int64_t h, int64_t i) const { return q + (b * Tq + i) * ldq + h * qhs; }
  const T* krow(int64_t b, int64_t g, int64_t j) const { return k + (b * Tk + j) * ldkv + g * kvhs; }
  const T* vrow(int64_t b, int64_t g, int64_t j) const { return v + (b * Tk + j) * ldkv + g * kvhs; }
  A scale() const { return A(1.0 / std::sqrt(double(hd))); }
};

// Row p (hd values) in the compute type: p itself when T is it, else widened into buf.
template <typename T>
inline const Acc<T>* widened(const T* p, int hd, Acc<T>* buf) {
  if constexpr (std::is_same<T, Acc<T>>::value) {
    return p;
  } else {
    for (int d = 0; d < hd; d++) buf[d] = Acc<T>(p[d]);
    return buf;
  }
}

// x[c] = exp(x[c] - sub) for c < n; returns their sum. fp32 runs vexp (the exponentials are a
// large part of attention's time); double (the gradient checks) runs std::exp.
inline double exp_sub_sum(double* x, int64_t n, double sub) {
  double sum = 0;
  for (int64_t c = 0; c < n; c++) sum += (x[c] = std::exp(x[c] - sub));
  return sum;
}

inline float exp_sub_sum(float* x, int64_t n, float sub) {
  using V = Vec<float>::type;
  constexpr int64_t W = kLanes<float>;
  V acc = V{};
  int64_t c = 0;
  for (; c + W <= n; c += W) {
    const V e = vexp(vload(x + c) - sub);
    vstore(x + c, e);
    acc += e;
  }
  if (c < n) {  // the tail through one padded vector: -inf lanes give 0
    float tail[W];
    for (int64_t t = 0; t < W; t++) tail[t] = c + t < n ? x[c + t] : -INFINITY;
    const V e = vexp(vload(tail) - sub);
    vstore(tail, e);
    for (int64_t t = 0; c + t < n; t++) x[c + t] = tail[t];
    acc += e;
  }
  return hsum<float>(acc);
}

// max(init, x[0..n)), lane-wise as the scalar (m < x ? x : m): a NaN score is skipped here and shows
// up in the exponentials instead.
template <typename T>
inline T row_max(const T* x, int64_t n, T init) {
  using V = typename Vec<T>::type;
  constexpr int64_t W = kLanes<T>;
  V mv = V{} + init;
  int64_t c = 0;
  for (; c + W <= n; c += W) {
    const V v = vload(x + c);
    mv = mv < v ? v : mv;
  }
  T m = init;
  for (int64_t t = 0; t < W; t++) m = m < mv[t] ? mv[t] : m;
  for (; c < n; c++) m = m < x[c] ? x[c] : m;
  return m;
}

// How many of the nk keys j0.. query i sees (keys j <= p0 + i): the leading columns of its score row.
template <typename T>
inline int64_t visible(const Layout<T>& L, int64_t i, int64_t j0, int64_t nk) {
  return std::max<int64_t>(0, std::min<int64_t>(nk, L.p0 + i - j0 + 1));
}

template <typename T>
void attention_fwd(T* out, Acc<T>* lse, const Layout<T>& L) {
  using A = Acc<T>;
  const int hd = L.hd, group = L.nh / L.nkv;
  const int64_t hdp = padded_hd(hd), ldo = int64_t(L.nh) * hd, nqb = (L.Tq + BQ - 1) / BQ;
  const A scale = L.scale();
  // Work item = (batch, head, query block): rows are independent, so any split is exact. A chunk
  // gets at least ~2^19 multiply-adds, so that a short decode step is not split for less work than
  // waking a thread costs.
  const int64_t item_work = std::max<int64_t>(1, std::min(BQ, L.Tq) * (L.p0 + L.Tq) * hd);
  // K^T (hd x nkeys, row stride tkp) and V (nkeys x hdp) of every (batch, kv head), widened and
  // packed once: every query block of the group's heads reads the same keys (packed per block,
  // this transposition was a third of the forward at 1024 tokens). Zero past the last key, so the
  // block products' padded columns read zeros. Decoding's few rows read K and V in place instead.
  const int64_t nkeys = L.p0 + L.Tq, tkp = round_up(nkeys, BK);
  const bool pack = std::min(BQ, L.Tq) >= kFewRows;
  const int64_t kt_size = hd * tkp, v_size = tkp * hdp, kblocks = tkp / BK;
  // The buffer lives as long as the calling thread (fresh pages on every call cost more than the
  // packing at a few hundred tokens).
  static thread_local std::vector<A> packed_kv;
  if (pack && packed_kv.size() < size_t(L.B * L.nkv * (kt_size + v_size))) packed_kv.resize(size_t(L.B * L.nkv * (kt_size + v_size)));
  A* const kt_all = packed_kv.data();
  A* const v_all = kt_all + L.B * L.nkv * kt_size;
  if (pack)
    parallel_for(L.B * L.nkv * kblocks, 4, [&](int64_t w0, int64_t w1) {
      for (int64_t w = w0; w < w1; w++) {
        const int64_t bg = w / kblocks, b = bg / L.nkv, g = bg % L.nkv, j0 = (w % kblocks) * BK;
        A* kt = kt_all + bg * kt_size;
        A* vb = v_all + bg * v_size;
        for (int64_t j = j0; j < j0 + BK; j++) {
          if (j >= nkeys) {
            for (int d = 0; d < hd; d++) kt[d * tkp + j] = A(0);
            continue;
          }
          const T* kr = L.krow(b, g, j);
          const T* vr = L.vrow(b, g, j);
          for (int d = 0; d < hd; d++) kt[d * tkp + j] = A(kr[d]);
          for (int d = 0; d < hd; d++) vb[j * hdp + d] = A(vr[d]);
          for (int64_t d = hd; d < hdp; d++) vb[j * hdp + d] = A(0);
        }
      }
    });
  parallel_for(L.B * L.nh * nqb, (int64_t(1) << 19) / item_work + 1, [&](int64_t w0, int64_t w1) {
    // Sized for the rows there are (decoding: one), so a call for one token costs little besides.
    const int64_t rows = std::min(BQ, L.Tq);
    std::vector<A> qs(size_t(rows * hd)), s(size_t(rows * BK)), o(size_t(rows * hdp)), mx(static_cast<size_t>(rows)),
        sum(static_cast<size_t>(rows)), kw(static_cast<size_t>(hd)), vw(static_cast<size_t>(hd));  // a k/v row widened (bf16, few rows)
    for (int64_t w = w0; w < w1; w++) {
      const int64_t b = w / (L.nh * nqb), h = (w / nqb) % L.nh, i0 = (w % nqb) * BQ;
      const int64_t g = h / group, mq = std::min(BQ, L.Tq - i0);
      const A slope = L.slopes ? L.slopes[h] : A(0);
      for (int64_t r = 0; r < mq; r++) {
        const T* src = L.qrow(b, h, i0 + r);
        for (int d = 0; d < hd; d++) qs[r * hd + d] = A(src[d]) * scale;
      }
      std::fill(o.begin(), o.begin() + mq * hdp, A(0));
      std::fill(mx.begin(), mx.begin() + mq, A(-INFINITY));
      std::fill(sum.begin(), sum.begin() + mq, A(0));
      const int64_t kend = L.p0 + i0 + mq;  // keys the block's last query sees
      for (int64_t j0 = 0; j0 < kend; j0 += BK) {
        const int64_t nk = std::min(BK, kend - j0);
        // A few rows (decoding, a short chunk's tail) would not pay for packing K and V: dot
        // products and axpys on their rows in place instead.
        const bool few = mq < kFewRows;
        if (few) {
          for (int64_t c = 0; c < nk; c++) {
            const A* kr = widened(L.krow(b, g, j0 + c), hd, kw.data());
            for (int64_t r = 0; r < mq; r++) s[r * BK + c] = dot(qs.data() + r * hd, kr, hd);
          }
        } else {
          mm<A, false>(mq, nk, hd, qs.data(), hd, kt_all + (b * L.nkv + g) * kt_size + j0, tkp, s.data(), BK, false);
        }
        for (int64_t r = 0; r < mq; r++) {
          A* sr = s.data() + r * BK;
          const int64_t n = visible(L, i0 + r, j0, nk);
          if (L.slopes)
            for (int64_t c = 0; c < n; c++) sr[c] += slope * A(j0 + c);
          const A m = row_max(sr, n, mx[r]);
          // Before its first visible key a row's max is -inf: nothing to rescale, and no -inf - -inf.
          const A alpha = mx[r] == A(-INFINITY) ? A(0) : std::exp(mx[r] - m);
          const A add = exp_sub_sum(sr, n, m);
          for (int64_t c = n; c < nk; c++) sr[c] = 0;
          if (alpha != A(1)) {
            A* orow = o.data() + r * hdp;
            for (int64_t d = 0; d < hdp; d++) orow[d] *= alpha;
          }
          sum[r] = sum[r] * alpha + add;
          mx[r] = m;
        }
        if (few) {  // key-major, so that each v row is widened once; every o row still sums keys in order
          for (int64_t c = 0; c < nk; c++) {
            const A* vr = widened(L.vrow(b, g, j0 + c), hd, vw.data());
            for (int64_t r = 0; r < mq; r++)
              if (c < visible(L, i0 + r, j0, nk)) axpy(o.data() + r * hdp, s[r * BK + c], vr, hd);
          }
        } else {
          mm<A, false>(mq, hd, nk, s.data(), BK, v_all + (b * L.nkv + g) * v_size + j0 * hdp, hdp, o.data(), hdp, true);
        }
      }
      for (int64_t r = 0; r < mq; r++) {
        const int64_t i = i0 + r;
        const A inv = A(1) / sum[r];
        T* dst = out + (b * L.Tq + i) * ldo + h * hd;
        for (int d = 0; d < hd; d++) dst[d] = T(o[r * hdp + d] * inv);
        if (lse) lse[(b * L.nh + h) * L.Tq + i] = mx[r] + std::log(sum[r]);
      }
    }
  });
}

template <typename T>
void attention_bwd(T* dq, T* dk, T* dv, const T* dout, const T* out, const Acc<T>* lse, const Layout<T>& L) {
  using A = Acc<T>;
  const int hd = L.hd, group = L.nh / L.nkv;
  const int64_t hdp = padded_hd(hd), ldo = int64_t(L.nh) * hd, Tq = L.Tq, Tk = L.Tk;
  const int64_t tkp = round_up(Tk, BK);
  const A scale = L.scale();
  // Work item = (batch, kv head): it owns dk/dv of that kv head and dq of its query heads, so no
  // two threads write the same gradient row; the query heads of its group run one after another.
  parallel_for(L.B * L.nkv, 1, [&](int64_t w0, int64_t w1) {
    // Whole-sequence packed operands of one kv head (K^T, V^T for the score products, K s for dQ)
    // and of one query head (Q s, dY, the dQ sum); tiles of one block pair (P, dP/dS, dK, dV sums).
    std::vector<A> kt(size_t(hd * tkp)), vt(size_t(hd * tkp)), ks(size_t(Tk * hdp)), qs(size_t(Tq * hdp)),
        dy(size_t(Tq * hdp)), dqs(size_t(Tq * hdp)), p(size_t(BQ * BK)), ds(size_t(BQ * BK)),
        dks(size_t(BK * hdp)), dvs(size_t(BK * hdp)), drow(static_cast<size_t>(Tq));
    for (int64_t w = w0; w < w1; w++) {
      const int64_t b = w / L.nkv, g = w % L.nkv;
      for (int64_t j = 0; j < Tk; j++) {
        const T* kr = L.krow(b, g, j);
        const T* vr = L.vrow(b, g, j);
        for (int d = 0; d < hd; d++) {
          kt[d * tkp + j] = A(kr[d]);
          vt[d * tkp + j] = A(vr[d]);
          ks[j * hdp + d] = A(kr[d]) * scale;
        }
      }
      for (int64_t h = g * group; h < (g + 1) * group; h++) {
        const A slope = L.slopes ? L.slopes[h] : A(0);
        const A* lrow = lse + (b * L.nh + h) * Tq;
        for (int64_t i = 0; i < Tq; i++) {
          const T* qr = L.qrow(b, h, i);
          const T* yr = out + (b * Tq + i) * ldo + h * hd;
          const T* gr = dout + (b * Tq + i) * ldo + h * hd;
          A dsum = 0;
          for (int d = 0; d < hd; d++) {
            qs[i * hdp + d] = A(qr[d]) * scale;  // as the forward rounds it: the same scores again
            dy[i * hdp + d] = A(gr[d]);
            dsum += A(gr[d]) * A(yr[d]);
          }
          drow[i] = dsum;
        }
        std::fill(dqs.begin(), dqs.end(), A(0));
        for (int64_t j0 = 0; j0 < Tk; j0 += BK) {
          const int64_t nk = std::min(BK, Tk - j0);
          const int64_t first = std::max<int64_t>(0, j0 - L.p0);  // first query that sees key j0
          if (first >= Tq) break;
          std::fill(dks.begin(), dks.end(), A(0));
          std::fill(dvs.begin(), dvs.end(), A(0));
          for (int64_t i0 = first / BQ * BQ; i0 < Tq; i0 += BQ) {
            const int64_t mq = std::min(BQ, Tq - i0);
            const A* qb = qs.data() + i0 * hdp;
            const A* yb = dy.data() + i0 * hdp;
            mm<A, false>(mq, nk, hd, qb, hdp, kt.data() + j0, tkp, p.data(), BK, false);
            mm<A, false>(mq, nk, hd, yb, hdp, vt.data() + j0, tkp, ds.data(), BK, false);
            for (int64_t r = 0; r < mq; r++) {
              const int64_t i = i0 + r, n = visible(L, i, j0, nk);
              A* pr = p.data() + r * BK;
              A* dr = ds.data() + r * BK;
              const A dd = drow[i];
              if (L.slopes)  // the scores exactly as the forward formed them
                for (int64_t c = 0; c < n; c++) pr[c] += slope * A(j0 + c);
              exp_sub_sum(pr, n, lrow[i]);
              for (int64_t c = 0; c < n; c++) dr[c] = pr[c] * (dr[c] - dd);
              for (int64_t c = n; c < nk; c++) pr[c] = 0, dr[c] = 0;
            }
            mm<A, true>(nk, hd, mq, p.data(), BK, yb, hdp, dvs.data(), hdp, true);
            mm<A, true>(nk, hd, mq, ds.data(), BK, qb, hdp, dks.data(), hdp, true);
            mm<A, false>(mq, hd, nk, ds.data(), BK, ks.data() + j0 * hdp, hdp, dqs.data() + i0 * hdp, hdp, true);
          }
          for (int64_t c = 0; c < nk; c++) {
            T* kd = dk + (b * Tk + j0 + c) * L.ldkv + g * L.kvhs;
            T* vd = dv + (b * Tk + j0 + c) * L.ldkv + g * L.kvhs;
            for (int d = 0; d < hd; d++) kd[d] = T(A(kd[d]) + dks[c * hdp + d]), vd[d] = T(A(vd[d]) + dvs[c * hdp + d]);
          }
        }
        for (int64_t i = 0; i < Tq; i++) {
          T* qd = dq + (b * Tq + i) * L.ldq + h * L.qhs;
          for (int d = 0; d < hd; d++) qd[d] = T(A(qd[d]) + dqs[i * hdp + d]);
        }
      }
    }
  });
}

}  // namespace

template <typename T>
void attention_forward(T* out, Acc<T>* lse, const T* q, int64_t ldq, const T* k, const T* v, int64_t ldkv,
                       int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh, int nkv, int hd) {
  attention_fwd<T>(out, lse, {q, ldq, hd, k, v, ldkv, hd, nullptr, B, Tq, Tk, p0, nh, nkv, hd});
}

template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const Acc<T>* lse, const T* q, int64_t ldq,
                        const T* k, const T* v, int64_t ldkv, int64_t B, int64_t Tq, int64_t Tk,
                        int64_t p0, int nh, int nkv, int hd) {
  attention_bwd<T>(dq, dk, dv, dout, out, lse, {q, ldq, hd, k, v, ldkv, hd, nullptr, B, Tq, Tk, p0, nh, nkv, hd});
}

template <typename T>
void alibi_slopes(T* out, int n) {
  int p = 1;
  while (2 * p <= n) p *= 2;  // 2^floor(log2 n)
  const T base = T(std::pow(2.0, -8.0 / p)), extra = T(std::pow(2.0, -4.0 / p));
  auto power = [](T x, int e) {  // x^e in T's precision
    return std::is_same<T, float>::value ? T(std::pow(float(x), float(e))) : T(std::pow(double(x), double(e)));
  };
  for (int i = 0; i < p; i++) out[i] = power(base, i + 1);
  for (int i = p; i < n; i++) out[i] = power(extra, 2 * (i - p) + 1);
}

template <typename T>
void alibi_attention_forward(T* out, Acc<T>* lse, const T* q, int64_t ldq, int64_t qhs, const T* k, const T* v,
                             int64_t ldkv, int64_t kvhs, const Acc<T>* slopes, int64_t B, int64_t Tq, int64_t Tk,
                             int64_t p0, int nh, int hd) {
  attention_fwd<T>(out, lse, {q, ldq, qhs, k, v, ldkv, kvhs, slopes, B, Tq, Tk, p0, nh, nh, hd});
}

template <typename T>
void alibi_attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const Acc<T>* lse, const T* q,
                              int64_t ldq, int64_t qhs, const T* k, const T* v, int64_t ldkv, int64_t kvhs,
                              const Acc<T>* slopes, int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh, int hd) {
  attention_bwd<T>(dq, dk, dv, dout, out, lse, {q, ldq, qhs, k, v, ldkv, kvhs, slopes, B, Tq, Tk, p0, nh, nh, hd});
}

#define SFT_INSTANTIATE(T)                                                                                         \
  template void attention_forward<T>(T*, Acc<T>*, const T*, int64_t, const T*, const T*, int64_t, int64_t, int64_t,  \
                                     int64_t, int64_t, int, int, int);                                               \
  template void attention_backward<T>(T*, T*, T*, const T*, const T*, const Acc<T>*, const T*, int64_t, const T*,    \
                                      const T*, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int);         \
  template void alibi_attention_forward<T>(T*, Acc<T>*, const T*, int64_t, int64_t, const T*, const T*, int64_t,     \
                                           int64_t, const Acc<T>*, int64_t, int64_t, int64_t, int64_t, int, int);    \
  template void alibi_attention_backward<T>(T*, T*, T*, const T*, const T*, const Acc<T>*, const T*, int64_t,        \
                                            int64_t, const T*, const T*, int64_t, int64_t, const Acc<T>*, int64_t,   \
                                            int64_t, int64_t, int64_t, int, int);
SFT_INSTANTIATE(float)
SFT_INSTANTIATE(double)
SFT_INSTANTIATE(bf16)
#undef SFT_INSTANTIATE
template void alibi_slopes<float>(float*, int);
template void alibi_slopes<double>(double*, int);

}  // namespace sft::cpu
