// The table of SIMD kernels one instruction set provides (kernels_portable.cpp, kernels_avx2.cpp,
// kernels_avx512.cpp; cpu/isa.h picks one). Declarations only: the per-ISA files are compiled with
// their own target flags, so nothing inline may be shared with the rest of the engine.
#pragma once
#include <cstdint>

namespace sft::cpu {

struct Kernels {
  const char* name;
  // The fp32 GEMM micro-kernel: an mr x nr tile of C from packed panels over kc (Ap: k-major
  // strips of mr rows of A; Bp: k-major strips of nr rows of op(B)), with
  // C[i * ldc + j] = alpha * acc + (beta == 0 ? 0 : beta * C[i * ldc + j]).
  int mr, nr;
  void (*gemm_tile)(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, float alpha, float beta);
  // Skinny GEMM (one operand a few columns wide: LoRA's rank): for row m in [0, rows) and column
  // j < n <= nr, C[m * rs + j * cs] = alpha * sum_k A[m * sm + k * sk] Bp[k * nr + j] (+ beta * C).
  // A is read in place through its strides (no packing of the large operand); Bp is op(B) packed
  // as one k-major strip of nr columns, zero beyond n. Each element sums k in order, in one pass.
  void (*gemm_skinny)(int64_t rows, int n, int64_t K, const float* A, int64_t sm, int64_t sk, const float* Bp, float* C,
                      int64_t rs, int64_t cs, float alpha, float beta);
  // The same with the wide operand A in bf16 (widened as it is read; the sums are the fp32 ones).
  void (*gemm_skinny_bf16)(int64_t rows, int n, int64_t K, const uint16_t* A, int64_t sm, int64_t sk, const float* Bp,
                           float* C, int64_t rs, int64_t cs, float alpha, float beta);
  // The bf16 GEMM micro-kernel (nullptr where the instruction set has none, and the bf16 GEMM widens
  // into the fp32 panels instead): an mr16 x nr16 tile of fp32 C from bf16 panels; C as gemm_tile.
  // Its panels' layout is told by kstep16, the k granule they are padded to (with zeros):
  //   2  (vdpbf16ps): k in pairs, Ap[(p * mr16 + i) * 2 + e] = opA[i, 2p + e] and
  //      Bp[(p * nr16 + j) * 2 + e] = opB[j, 2p + e], over ceil(kc / 2) pairs;
  //   32 (AMX, mr16 = nr16 = 32): blocks of 32 k, each four 1 KiB tiles, A's two of 16 rows x 32 k
  //      (Ap[b * 1024 + (i / 16) * 512 + (i % 16) * 32 + kk] = opA[i, 32b + kk]) and B's two of 16
  //      k-pairs x 16 columns (Bp[b * 1024 + (j / 16) * 512 + p * 32 + (j % 16) * 2 + e] =
  //      opB[j, 32b + 2p + e]): the layouts the tile loads and TDPBF16PS take as they are.
  int mr16, nr16, kstep16;
  void (*gemm_tile_bf16)(int64_t kc, const uint16_t* Ap, const uint16_t* Bp, float* C, int64_t ldc, float alpha,
                         float beta);
  // GEMV rows with x in bf16 as well (vdpbf16ps over k-pairs of both, no widening; nullptr where the
  // instruction set has none): gemv_bf16's contract otherwise.
  void (*gemv_bf16x)(int64_t M, int64_t n0, int64_t n1, int64_t K, const uint16_t* x, int64_t ldx, const uint16_t* W,
                     int64_t ldw, float* y, int64_t ldy, float alpha, float beta);
  // GEMV rows: y[m * ldy + n] = alpha * sum_k x[m * ldx + k] W[n * ldw + k] (+ beta * y) for
  // n in [n0, n1) and m < M (M <= kGemvMaxM). W is fp32, bf16 or IEEE f16 bits; fp32 accumulation.
  void (*gemv_f32)(int64_t M, int64_t n0, int64_t n1, int64_t K, const float* x, int64_t ldx, const float* W, int64_t ldw,
                   float* y, int64_t ldy, float alpha, float beta);
  void (*gemv_bf16)(int64_t M, int64_t n0, int64_t n1, int64_t K, const float* x, int64_t ldx, const uint16_t* W,
                    int64_t ldw, float* y, int64_t ldy, float alpha, float beta);
  void (*gemv_f16)(int64_t M, int64_t n0, int64_t n1, int64_t K, const float* x, int64_t ldx, const uint16_t* W,
                   int64_t ldw, float* y, int64_t ldy, float alpha, float beta);
  // GEMV rows from gemm_pack_b's panels of B [N, K] (decode with frozen weights packed once; nr =
  // this table's, kc and nc the panels' blocking): y[m * ldy + n] for m < M and the columns n < N of
  // strips [s0, s1) (strip s: columns s nr ..). Each element is summed as the fp32 tile kernel sums
  // it over the same panels — each kc block in k order from zero, then alpha * block + (first
  // block ? beta * y : y) — so for alpha 1 and beta 0 or 1 (linear layers) a row has the bits the
  // blocked GEMM gives it, whatever M and the strip split.
  void (*gemv_panels)(int64_t M, int64_t s0, int64_t s1, const float* x, int64_t ldx, const float* panels, int64_t N,
                      int64_t K, int64_t kc, int64_t nc, float* y, int64_t ldy, float alpha, float beta);
  // LoRA dropout over elements [i0, i0 + n) of a stream: element i is dropped when the top 53 bits of
  // rng::mix(key + i) are below `threshold` (= ceil(p 2^53): exactly uniform01_key(key, i) < p).
  // dropout: out[j] = dropped ? 0 : x[j] * keep;  dropout_add: out[j] += dropped ? 0 : x[j] * keep.
  void (*dropout)(float* out, const float* x, int64_t n, int64_t i0, uint64_t key, uint64_t threshold, float keep);
  void (*dropout_add)(float* out, const float* x, int64_t n, int64_t i0, uint64_t key, uint64_t threshold, float keep);
  // Attention's block product (cpu/attention.cpp): C[M, N] (+)= op(A)[M, K] B[K, N] in fp32, op(A)[r, k]
  // = A[r * lda + k], or A[k * lda + r] when ta (read in place). Each element sums k in order with one
  // rounding per term where the instruction set has FMA. Columns go in whole strips of nr (at most
  // kAttnPad): B and C must be readable and writable up to N rounded up to kAttnPad in every row;
  // what lands in those padding columns is not used.
  void (*attn_mm)(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, bool ta, const float* B, int64_t ldb,
                  float* C, int64_t ldc, bool acc);
  // Probes (bench/native): `iters` rounds of independent FMA chains, returns the flops done; the
  // sum of n floats read once (memory bandwidth).
  double (*fma_probe)(int64_t iters);
  float (*stream_sum)(const float* x, int64_t n);
};

constexpr int64_t kAttnPad = 32;  // the widest strip attn_mm writes (2 AVX-512 vectors of floats)
constexpr int64_t kGemvMaxM = 8;  // up to this many rows of A (a decode batch), GEMV (W streamed once per 4 rows) beats packing

// nullptr where the build has no kernels of that instruction set (other architectures, old compilers).
const Kernels* portable_kernels();
const Kernels* avx2_kernels();
const Kernels* avx512_kernels();
const Kernels* avx512bf16_kernels();
const Kernels* amx_kernels();

}  // namespace sft::cpu
