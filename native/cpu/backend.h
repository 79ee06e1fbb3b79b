// The CPU backend: the reference implementation of the backend contract (backend/backend.h).
// "Device" memory is host memory (256-byte aligned, zero-filled); every op is the native/cpu/
// function of the same name, so this file is the map from the contract to the CPU kernels.
// T = float for real use, double for the finite-difference checks, with G = T (no master copies);
// or T = bf16 (`bf16: true`): frozen weights and activations in bf16, G = float for the trainable
// masters, gradients, moments, statistics, rotary/ALiBi tables and attention's logsumexp, as the
// CUDA backend's bf16. The ops widen bf16 to fp32 on load and round once on store (cpu/ops.h).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "backend/backend.h"
#include "backend/plan.h"
#include "core/dtype.h"
#include "core/random.h"
#include "core/threads.h"
#include "cpu/gemm.h"
#include "cpu/inference_panels.h"
#include "cpu/isa.h"
#include "cpu/mixed.h"
#include "cpu/ops.h"
#include "cpu/quant.h"

namespace sft {

template <typename Elem>
class CpuBackend {
 public:
  using T = Elem;
  using G = cpu::Acc<Elem>;
  using Saved = G;  // attention keeps each row's logsumexp [B, nh, Tq]
  using Nf4 = cpu::Nf4Weight;
  static constexpr bool kBf16 = std::is_same<Elem, cpu::bf16>::value;
  static constexpr Device device = Device::Cpu;
  static constexpr Compute compute =
      kBf16 ? Compute::BF16 : std::is_same<Elem, double>::value ? Compute::F64 : Compute::F32;

  static bool supports(Op) { return true; }
  static int64_t attention_saved_elems(int64_t B, int64_t nh, int64_t Tq, int64_t /*Tk*/) { return B * nh * Tq; }
  std::string device_label() const { return "cpu"; }

  // ---- memory ----------------------------------------------------------------------------------
  void* alloc(MemKind kind, size_t bytes) {
    // Weights and the KV cache, when megabytes, on 2 MiB pages where the kernel allows it
    // (transparent huge pages, "madvise" mode): decode streams every weight once per token, and
    // 4 KiB pages cost a TLB miss every 4 KiB of that stream. Activations and workspace stay on
    // 4 KiB pages (huge ones would round every block up, and raise the peak RSS of training).
    const bool huge = (kind == MemKind::Weights || kind == MemKind::KvCache) && bytes >= (size_t(4) << 20);
    void* p = huge ? std::aligned_alloc(size_t(2) << 20, (bytes + (size_t(2) << 20) - 1) & ~((size_t(2) << 20) - 1))
                   : std::aligned_alloc(kPlanAlign, align_up(bytes));
#ifdef MADV_HUGEPAGE
    if (p && huge) madvise(p, bytes, MADV_HUGEPAGE);  // a hint: refused, pages stay 4 KiB
#endif
    if (!p)
      throw OutOfMemory(kind, bytes, std::string("out of host memory allocating ") + std::to_string(bytes >> 20) + " MiB of " +
                                         mem_kind_name(kind));
    if (zero_filled(kind)) std::memset(p, 0, bytes);
    return p;
  }
  void release(void* p) { std::free(p); }
  void upload(void* dst, const void* src, size_t n) { if (n) std::memcpy(dst, src, n); }
  void download(void* dst, const void* src, size_t n) { if (n) std::memcpy(dst, src, n); }
  void copy(void* dst, const void* src, size_t n) { if (n) std::memmove(dst, src, n); }
  void zero(void* dst, size_t n) { if (n) std::memset(dst, 0, n); }
  void sync() {}
  // What can still be allocated: MemAvailable of /proc/meminfo (0 = unknown).
  static size_t free_bytes() {
    std::ifstream f("/proc/meminfo");
    std::string key;
    size_t kb = 0;
    std::string unit;
    while (f >> key >> kb >> unit)
      if (key == "MemAvailable:") return kb * 1024;
    return 0;
  }

  // ---- host values <-> device elements ------------------------------------------------------------
  // Checkpoint bytes of dtype dt into n elements (exact widening; rounding only if E is narrower).
  template <typename E>
  void upload_elems(E* dst, const void* src, DType dt, int64_t n) {
    parallel_for(n, 1 << 15, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; i++) dst[i] = E(element(src, dt, i));
    });
  }
  template <typename E, typename S>
  void upload_values(E* dst, const S* src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = E(src[i]);
  }
  template <typename E, typename D>
  void download_values(D* dst, const E* src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = D(cpu::Acc<E>(src[i]));
  }

  // ---- linear ------------------------------------------------------------------------------------
  // A weight packed for inference (pack_for_inference) is read from its panels: the blocked GEMM
  // without packing B (the same bits), or up to kGemvMaxM rows the panel GEMV.
  void linear_forward(T* y, const T* x, const T* W, const T* b, int64_t M, int64_t K, int64_t N, bool accumulate) {
    if constexpr (std::is_same<T, float>::value) {
      if (!panels_.empty())
        if (const cpu::PackedB* pb = panels_.find(W)) {
          cpu::gemm_prepacked(false, M, 1.f, x, K, *pb, accumulate ? 1.f : 0.f, y, N);
          if (b) cpu::add_bias<T>(y, b, M, N);
          return;
        }
    }
    cpu::linear_forward<T>(y, x, W, b, M, K, N, accumulate);
  }
  void linear_backward(T* dx, G* dW, G* db, const T* dy, const T* x, const T* W, int64_t M, int64_t K, int64_t N) {
    not_packed(W, "linear_backward");
    cpu::linear_backward<T>(dx, dW, db, dy, x, W, M, K, N);
  }
  void add_bias(T* y, const T* b, int64_t M, int64_t N) { cpu::add_bias<T>(y, b, M, N); }
  void bias_backward(G* db, const T* dy, int64_t M, int64_t N) {
    cpu::linear_backward<T>(nullptr, nullptr, db, dy, nullptr, nullptr, M, 0, N);
  }
  // C[m, n] = beta C + alpha sum_k opA[m, k] opB[n, k] (cpu/gemm.h's conventions); C is T or G.
  template <typename C>
  void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const T* A, int64_t lda, const T* B,
            int64_t ldb, double beta, C* out, int64_t ldc) {
    not_packed(B, "gemm");
    not_packed(out, "gemm");
    cpu::gemm_t<T, C>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, out, ldc);
  }

  // ---- frozen weights in the GEMM's panels (inference: issue 13) ---------------------------------
  // fp32 only: W [N, K] goes into gemm_pack_b's panel layout in place (cpu/inference_panels.h), so
  // prefill and scoring GEMMs stop packing it on every call; false where it stays row-major (N not
  // a multiple of the kernels' nr, one strip, or T not float). Whoever reads or writes W by its
  // rows (get/set_tensor, merging, training) calls unpack_for_inference first.
  bool pack_for_inference(T* W, int64_t N, int64_t K) {
    if constexpr (std::is_same<T, float>::value) return panels_.pack(W, N, K);
    else return false;
  }
  void unpack_for_inference() { panels_.unpack_all(); }
  int64_t packed_for_inference() const { return panels_.size(); }

  // ---- NF4 (QLoRA) -------------------------------------------------------------------------------
  // One NF4 tensor per row segment (the checkpoint tensors of a fused matrix), from host floats.
  struct Segment {
    int64_t row0, rows;
  };
  // An NF4 matrix [rows, cols] with no rows yet: each checkpoint tensor joins it as it loads.
  std::unique_ptr<Nf4> nf4_matrix(int64_t rows, int64_t cols) {
    auto q = std::make_unique<Nf4>();
    q->rows = rows, q->cols = cols;
    return q;
  }
  // Rows [s.row0, s.row0 + s.rows) of q, from w[s.rows * cols] host floats: one NF4 tensor.
  void nf4_quantize_rows(Nf4& q, const float* w, const Segment& s, bool double_quant) {
    q.segments.push_back({s.row0, s.rows, cpu::nf4_quantize_tensor(w, s.rows * q.cols, double_quant)});
  }
  std::unique_ptr<Nf4> nf4_quantize(const float* w, int64_t rows, int64_t cols, const std::vector<Segment>& segs,
                                    bool double_quant) {
    auto q = nf4_matrix(rows, cols);
    for (const auto& s : segs) nf4_quantize_rows(*q, w + s.row0 * cols, s, double_quant);
    return q;
  }
  // The value a T holds for v, as a float: what a weight loaded in T and read back gives.
  static float as_stored(double v) { return float(cpu::Acc<T>(T(v))); }
  static size_t nf4_bytes(const Nf4& q) { return q.bytes(); }
  // What nf4_quantize will take for one tensor of n elements (Nf4Tensor::bytes()), without doing it.
  static size_t nf4_bytes_for(int64_t n, bool double_quant) {
    const size_t blocks = size_t((n + cpu::kNf4Block - 1) / cpu::kNf4Block);
    const size_t scales = double_quant ? blocks + (blocks + cpu::kQ8Block - 1) / cpu::kQ8Block * 4 : blocks * 4;
    return size_t((n + 1) / 2) + scales + 4;
  }
  // The GEMM decodes NF4 tiles as it packs them: no dequantized matrix, no workspace.
  static size_t nf4_workspace_bytes(int64_t, int64_t) { return 0; }
  // Rows [r0, r0 + n) dequantized into host floats.
  void nf4_decode_rows(float* out, const Nf4& q, int64_t r0, int64_t n) {
    for (int64_t r = r0; r < r0 + n; r++) q.decode_row(out + (r - r0) * q.cols, r, 0, q.cols);
  }
  void linear_forward_nf4(T* y, const T* x, const Nf4& W, int64_t M, int64_t K, int64_t N, bool accumulate) {
    if constexpr (kBf16) cpu::gemm_q4_bf16(false, M, N, K, 1.0f, x, K, W, accumulate ? 1.0f : 0.0f, y, N);
    else cpu::gemm_q4<T>(false, M, N, K, T(1), x, K, W, accumulate ? T(1) : T(0), y, N);
  }
  void linear_backward_nf4(T* dx, const T* dy, const Nf4& W, int64_t M, int64_t K, int64_t N) {
    if constexpr (kBf16) cpu::gemm_q4_bf16(true, M, K, N, 1.0f, dy, N, W, 1.0f, dx, K);
    else cpu::gemm_q4<T>(true, M, K, N, T(1), dy, N, W, T(1), dx, K);
  }

  // ---- norms -------------------------------------------------------------------------------------
  void rmsnorm_forward(T* y, G* rstd, const T* x, const T* w, int64_t N, int64_t C, double eps) {
    cpu::rmsnorm_forward<T>(y, rstd, x, w, N, C, eps);
  }
  void rmsnorm_backward(T* dx, G* dw, const T* dy, const T* x, const T* w, const G* rstd, int64_t N, int64_t C) {
    cpu::rmsnorm_backward<T>(dx, dw, dy, x, w, rstd, N, C);
  }
  void layernorm_forward(T* y, G* mean, G* rstd, const T* x, const T* w, const T* b, int64_t N, int64_t C, double eps) {
    cpu::layernorm_forward<T>(y, mean, rstd, x, w, b, N, C, eps);
  }
  void layernorm_backward(T* dx, G* dw, G* db, const T* dy, const T* x, const T* w, const G* mean, const G* rstd,
                          int64_t N, int64_t C) {
    cpu::layernorm_backward<T>(dx, dw, db, dy, x, w, mean, rstd, N, C);
  }
  void l2norm_rows_forward(T* out, const T* in, int64_t R, int64_t C, double eps) {
    cpu::l2norm_rows_forward<T>(out, in, R, C, eps);
  }
  void l2norm_rows_backward(G* din, const G* dout, const T* in, int64_t R, int64_t C, double eps) {
    cpu::l2norm_rows_backward<T>(din, dout, in, R, C, eps);
  }

  // ---- rotary embeddings, attention ----------------------------------------------------------------
  void rope_forward(T* x, int64_t ld, int64_t rows, int64_t T_, int64_t p0, int heads, int hd, const G* cos, const G* sin) {
    cpu::rope_forward<T>(x, ld, rows, T_, p0, heads, hd, cos, sin);
  }
  void rope_backward(T* dx, int64_t ld, int64_t rows, int64_t T_, int64_t p0, int heads, int hd, const G* cos,
                     const G* sin) {
    cpu::rope_backward<T>(dx, ld, rows, T_, p0, heads, hd, cos, sin);
  }
  void attention_forward(T* out, Saved* saved, const T* q, int64_t ldq, const T* k, const T* v, int64_t ldkv, int64_t B,
                         int64_t Tq, int64_t Tk, int64_t p0, int nh, int nkv, int hd) {
    cpu::attention_forward<T>(out, saved, q, ldq, k, v, ldkv, B, Tq, Tk, p0, nh, nkv, hd);
  }
  void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const Saved* saved, const T* q, int64_t ldq,
                          const T* k, const T* v, int64_t ldkv, int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh,
                          int nkv, int hd) {
    cpu::attention_backward<T>(dq, dk, dv, dout, out, saved, q, ldq, k, v, ldkv, B, Tq, Tk, p0, nh, nkv, hd);
  }
  void alibi_slopes(G* out, int n) { cpu::alibi_slopes<G>(out, n); }
  void alibi_attention_forward(T* out, Saved* saved, const T* q, int64_t ldq, int64_t qhs, const T* k, const T* v,
                               int64_t ldkv, int64_t kvhs, const G* slopes, int64_t B, int64_t Tq, int64_t Tk, int64_t p0,
                               int nh, int hd) {
    cpu::alibi_attention_forward<T>(out, saved, q, ldq, qhs, k, v, ldkv, kvhs, slopes, B, Tq, Tk, p0, nh, hd);
  }
  void alibi_attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const Saved* saved, const T* q,
                                int64_t ldq, int64_t qhs, const T* k, const T* v, int64_t ldkv, int64_t kvhs,
                                const G* slopes, int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh, int hd) {
    cpu::alibi_attention_backward<T>(dq, dk, dv, dout, out, saved, q, ldq, qhs, k, v, ldkv, kvhs, slopes, B, Tq, Tk, p0, nh, hd);
  }

  // ---- activations, embedding, loss ----------------------------------------------------------------
  void swiglu_forward(T* out, const T* gate, const T* up, int64_t n) { cpu::swiglu_forward<T>(out, gate, up, n); }
  void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t n) {
    cpu::swiglu_backward<T>(dgate, dup, dout, gate, up, n);
  }
  void gelu_forward(T* out, const T* x, int64_t n) { cpu::gelu_tanh_forward<T>(out, x, n); }
  void gelu_backward(T* dx, const T* dout, const T* x, int64_t n) { cpu::gelu_tanh_backward<T>(dx, dout, x, n); }
  void embedding_forward(T* out, const int32_t* ids, const T* table, int64_t n, int64_t C) {
    cpu::embedding_forward<T>(out, ids, table, n, C);
  }
  void embedding_backward(G* dtable, const T* dout, const int32_t* ids, int64_t n, int64_t C) {
    cpu::embedding_backward<T>(dtable, dout, ids, n, C);
  }
  void cross_entropy_rows(T* logits, const int32_t* targets, int64_t N, int64_t V, double scale, bool grad, double* row_loss) {
    cpu::cross_entropy_rows<T>(logits, targets, N, V, G(scale), grad, row_loss);
  }
  double loss_total(const double* row_loss, const int32_t* targets, int64_t N, int64_t* count) {
    return cpu::loss_total(row_loss, targets, N, count);
  }

  // ---- LoRA dropout: element i dropped when uniform01_key(key, i) < p (core/random.h) -------------
  // fp32 runs the vectorised mask kernels; bf16 runs them too, on fp32 copies of slices of
  // cpu::kSlice elements (widened, masked and scaled, rounded once); double runs the scalar form.
  void dropout_forward(T* out, const T* x, int64_t rows, int64_t cols, double p, uint64_t key) {
    const G keep = G(1.0 / (1.0 - p));
    const uint64_t thr = rng::drop_threshold(p);
    parallel_for(rows * cols, 1 << 14, [&](int64_t i0, int64_t i1) {
      if constexpr (std::is_same<T, float>::value) {
        cpu::kernels().dropout(out + i0, x + i0, i1 - i0, i0, key, thr, keep);
      } else if constexpr (kBf16) {
        float in[cpu::kSlice], res[cpu::kSlice];  // two buffers: the kernel's operands are __restrict
        for (int64_t s = i0; s < i1; s += cpu::kSlice) {
          const int64_t n = std::min<int64_t>(cpu::kSlice, i1 - s);
          cpu::widen(in, x + s, n);
          cpu::kernels().dropout(res, in, n, s, key, thr, keep);
          cpu::narrow(out + s, res, n);
        }
      } else {
        for (int64_t i = i0; i < i1; i++) out[i] = rng::dropped(key, uint64_t(i), thr) ? T(0) : x[i] * keep;
      }
    });
  }
  void dropout_backward_add(T* dx, const T* dxd, int64_t n, double p, uint64_t key) {
    const G keep = G(1.0 / (1.0 - p));
    const uint64_t thr = rng::drop_threshold(p);
    parallel_for(n, 1 << 14, [&](int64_t i0, int64_t i1) {
      if constexpr (std::is_same<T, float>::value) {
        cpu::kernels().dropout_add(dx + i0, dxd + i0, i1 - i0, i0, key, thr, keep);
      } else if constexpr (kBf16) {
        float acc[cpu::kSlice], add[cpu::kSlice];
        for (int64_t s = i0; s < i1; s += cpu::kSlice) {
          const int64_t m = std::min<int64_t>(cpu::kSlice, i1 - s);
          cpu::widen(acc, dx + s, m);
          cpu::widen(add, dxd + s, m);
          cpu::kernels().dropout_add(acc, add, m, s, key, thr, keep);
          cpu::narrow(dx + s, acc, m);  // kept elements rounded once; dropped ones unchanged (exact)
        }
      } else {
        for (int64_t i = i0; i < i1; i++)
          if (!rng::dropped(key, uint64_t(i), thr)) dx[i] = std::fma(dxd[i], keep, dx[i]);
      }
    });
  }

  // ---- data movement -------------------------------------------------------------------------------
  void copy_2d(T* dst, int64_t ld_dst, const T* src, int64_t ld_src, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; r++) std::memcpy(dst + r * ld_dst, src + r * ld_src, size_t(cols) * sizeof(T));
  }
  // Sums in the wider of the two types (bf16 is widened), rounded once into dst.
  template <typename D, typename S>
  void add_into(D* dst, const S* src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = D(cpu::Acc<D>(dst[i]) + cpu::Acc<S>(src[i]));
  }
  // dst[c] += src[r * ld + c] for r = 0, 1, ... in order.
  template <typename D, typename S>
  void add_rows_into(D* dst, const S* src, int64_t rows, int64_t cols, int64_t ld_src) {
    for (int64_t r = 0; r < rows; r++)
      for (int64_t c = 0; c < cols; c++) dst[c] = D(cpu::Acc<D>(dst[c]) + cpu::Acc<S>(src[r * ld_src + c]));
  }
  // Element conversion (bf16 rounded to nearest even): masters to compute copies after each step.
  template <typename S, typename D>
  void cast(D* dst, const S* src, int64_t n) {
    if constexpr (std::is_same<S, float>::value && std::is_same<D, cpu::bf16>::value)
      parallel_for(n, 1 << 16, [&](int64_t i0, int64_t i1) { cpu::narrow(dst + i0, src + i0, i1 - i0); });
    else if constexpr (std::is_same<S, cpu::bf16>::value && std::is_same<D, float>::value)
      parallel_for(n, 1 << 16, [&](int64_t i0, int64_t i1) { cpu::widen(dst + i0, src + i0, i1 - i0); });
    else
      for (int64_t i = 0; i < n; i++) dst[i] = D(src[i]);
  }
  // dst[i] = mean + std * z_i, z_i standard normal (Box-Muller on elements 2i, 2i + 1 of stream key).
  template <typename E>
  void fill_normal(E* dst, int64_t n, uint64_t key, double mean, double std_) {
    parallel_for(n, 1 << 14, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; i++) {
        const double u1 = std::max(rng::uniform01_key(key, uint64_t(2 * i)), 1e-300), u2 = rng::uniform01_key(key, uint64_t(2 * i + 1));
        dst[i] = E(float(mean + std_ * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2)));
      }
    });
  }

  // ---- optimizer ----------------------------------------------------------------------------------
  // Sum of squares in index order, in double (the global norm's summation order is the buffer's).
  double sum_squares(const G* g, int64_t n) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += double(g[i]) * double(g[i]);
    return ss;
  }
  // The same over `count` tensors (the trainable weights after a step: one call, one pass).
  double sum_squares(const G* const* xs, const int64_t* ns, int count) {
    double ss = 0;
    for (int t = 0; t < count; t++) ss += sum_squares(xs[t], ns[t]);
    return ss;
  }
  void adamw_update(G* p, const G* g, G* m, G* v, int64_t n, double lr, double b1, double b2, double eps, double wd,
                    int64_t t, double grad_scale) {
    cpu::adamw_update<G>(p, g, m, v, n, lr, b1, b2, eps, wd, t, grad_scale);
  }
  void adamw_update_8bit(G* p, const G* g, uint8_t* m8, float* m_absmax, uint8_t* v8, float* v_absmax, int64_t n, double lr,
                         double b1, double b2, double eps, double wd, int64_t t, double grad_scale) {
    cpu::adamw_update_8bit<G>(p, g, m8, m_absmax, v8, v_absmax, n, lr, b1, b2, eps, wd, t, grad_scale);
  }
  // Paged AdamW pages optimizer states between host and device memory; on the CPU they are host
  // memory already: nothing to page, the block stays where it is.
  void page_optimizer(bool) {}
  static size_t paged_optimizer_bytes(bool) { return 0; }
  // The codes that mean 0 in bitsandbytes' dynamic maps (what fresh 8-bit moments hold).
  static uint8_t zero_code_signed() { return cpu::map_index(cpu::dynamic_map_signed(), 0.0f); }
  static uint8_t zero_code_unsigned() { return cpu::map_index(cpu::dynamic_map_unsigned(), 0.0f); }

 private:
  // A product that reads a matrix by its rows must never meet one in panels (the model unpacks
  // before anything but linear_forward touches a base weight): a loud error, not wrong numbers.
  void not_packed(const void* p, const char* op) const {
    if (!panels_.empty() && panels_.contains(static_cast<const float*>(p)))
      throw std::logic_error(std::string(op) + ": the weight is in inference panels (unpack_for_inference first)");
  }
  cpu::InferencePanels panels_;
};

}  // namespace sft
