// The CUDA backend: the backend contract (backend/backend.h) over the kernels in this folder.
// One device (0; CUDA_VISIBLE_DEVICES picks it), one non-blocking stream per model: every op and
// copy is queued on it in order, and only downloads (and the two ops that return host values:
// the loss and the gradient norm) wait for it. Memory per kind is one cudaMalloc each (the plan);
// the kernels' few temporaries come from the stream-ordered pool, whose release threshold is set
// so that after the first step they reuse memory instead of allocating it. Two exceptions: paged
// AdamW's optimizer block is pinned host memory (paged through cuda/paged_adamw.cuh), and each NF4
// weight is an allocation of its own (Weights), dequantized per layer into one workspace buffer.
//
// T = float or bf16 (activations and frozen weights); G = float: trainable master weights,
// gradients, moments, statistics. Attention saves each row's logsumexp, not its probabilities.
// NOT YET RUN ON A GPU: checked under the CPU emulator (test/cuda/emu) against the CPU backend.
#pragma once
#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "cuda/device.h"
#include "backend/plan.h"
#include "core/dtype.h"
#include "cpu/ops.h"
#include "cpu/quant.h"
#include "cuda/ops.cuh"
#include "cuda/paged_adamw.cuh"
#include "cuda/types.h"

namespace sft {

template <typename Elem>
class CudaBackend {
 public:
  using T = Elem;
  using G = float;
  using Saved = float;  // attention's logsumexp [B, nh, Tq]
  struct Segment {
    int64_t row0, rows;
  };
  // A QLoRA weight matrix [rows, cols] on the device: one NF4 tensor per row segment (checkpoint
  // tensor), in bitsandbytes' layout (cpu/quant.h): packed codes, and either the fp32 block scales
  // or, with double quantization, their 8-bit codes, one fp32 scale per 256 of them and the offset.
  // Each part (checkpoint tensor) has its own allocation (Weights), freed with the tensor.
  struct Nf4 {
    struct Part {
      int64_t row0 = 0, rows = 0;
      uint8_t* packed = nullptr;    // ceil(n/2) bytes, element 2j in the high nibble of byte j
      float* absmax = nullptr;      // no double quantization: one scale per 64 weights
      uint8_t* absmax_q = nullptr;  // double quantization: one code per 64 weights ...
      float* absmax2 = nullptr;     // ... one scale per 256 codes ...
      float* offset_dev = nullptr;  // ... and the mean of the scales (also on the host: offset)
      float offset = 0;
    };
    int64_t rows = 0, cols = 0;
    std::vector<Part> parts;
    std::vector<void*> blocks;  // one allocation (Weights) per part, freed with the tensor
    size_t bytes = 0;
    cudaStream_t stream = nullptr;
    Nf4() = default;
    Nf4(const Nf4&) = delete;
    Nf4& operator=(const Nf4&) = delete;
    ~Nf4() {
      if (blocks.empty()) return;
      cudaStreamSynchronize(stream);  // nothing queued may still read them
      for (void* b : blocks) cudaFree(b);
    }
  };
  static constexpr Device device = Device::Cuda;
  static constexpr Compute compute = std::is_same<Elem, float>::value ? Compute::F32 : Compute::BF16;

  static bool supports(Op) { return true; }
  static int64_t attention_saved_elems(int64_t B, int64_t nh, int64_t Tq, int64_t /*Tk*/) { return B * nh * Tq; }

  CudaBackend() = default;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;
  ~CudaBackend() {
    if (stream_) {
      cudaStreamSynchronize(stream_);
      pager_.reset();
      for (const auto& b : host_blocks_) cudaFreeHost(b.first);
      if (nf4_ws_) cudaFree(nf4_ws_);
      if (maps_) cudaFree(maps_);
      cudaStreamDestroy(stream_);
    }
  }

  // ---- memory ----------------------------------------------------------------------------------
  void* alloc(MemKind kind, size_t bytes) {
    ensure();
    void* p = nullptr;
    if (kind == MemKind::Optimizer && paged_) {  // paged AdamW: the moments in pinned host memory
      const cudaError_t e = cudaMallocHost(&p, align_up(bytes));
      if (e != cudaSuccess) {
        cudaGetLastError();
        throw OutOfMemory(kind, bytes, "out of pinned host memory allocating " + mib(bytes) + " of paged optimizer states");
      }
      std::memset(p, 0, bytes);
      host_blocks_.push_back({static_cast<char*>(p), align_up(bytes)});
      return p;
    }
    const cudaError_t e = cudaMalloc(&p, align_up(bytes));
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      size_t free_b = 0, total = 0;
      cudaMemGetInfo(&free_b, &total);
      throw OutOfMemory(kind, bytes, "GPU out of memory allocating " + mib(bytes) + " of " + mem_kind_name(kind) + " (" +
                                         mib(free_b) + " free of " + mib(total) + ")");
    }
    SFT_CUDA_CHECK(e);
    if (zero_filled(kind)) SFT_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_));
    return p;
  }
  void release(void* p) {
    cudaStreamSynchronize(stream_);  // nothing queued may still use it
    for (size_t i = 0; i < host_blocks_.size(); i++)
      if (host_blocks_[i].first == p) {
        host_blocks_.erase(host_blocks_.begin() + long(i));
        cudaFreeHost(p);
        return;
      }
    cudaFree(p);
  }
  // Memory of kind k is device memory, except paged optimizer states (pinned host blocks): copies
  // to, from and within those wait for the stream, then run on the host.
  void upload(void* dst, const void* src, size_t n) {
    if (!n) return;
    if (on_host(dst)) return sync(), void(std::memcpy(dst, src, n));
    // From pageable memory the copy is staged before the call returns, so src may be reused.
    SFT_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, stream_));
  }
  void download(void* dst, const void* src, size_t n) {
    if (!n) return;
    if (on_host(src)) return sync(), void(std::memcpy(dst, src, n));
    SFT_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, stream_));
    sync();
  }
  void copy(void* dst, const void* src, size_t n) {
    if (!n) return;
    const bool hd = on_host(dst), hs = on_host(src);
    if (hd && hs) return sync(), void(std::memcpy(dst, src, n));
    if (hd) return download(dst, src, n);
    if (hs) return upload(dst, src, n);
    SFT_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, stream_));
  }
  void zero(void* dst, size_t n) {
    if (!n) return;
    if (on_host(dst)) return sync(), void(std::memset(dst, 0, n));
    SFT_CUDA_CHECK(cudaMemsetAsync(dst, 0, n, stream_));
  }
  void sync() { SFT_CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  size_t free_bytes() {
    ensure();
    size_t free_b = 0, total = 0;
    SFT_CUDA_CHECK(cudaMemGetInfo(&free_b, &total));
    return free_b;
  }

  // ---- host values <-> device elements (converted on the host, in chunks) -------------------------
  template <typename E>
  void upload_elems(E* dst, const void* src, DType dt, int64_t n) {
    upload_converted(dst, n, [&](int64_t i) { return element(src, dt, i); });
  }
  template <typename E, typename S>
  void upload_values(E* dst, const S* src, int64_t n) {
    upload_converted(dst, n, [&](int64_t i) { return double(src[i]); });
  }
  template <typename E, typename D>
  void download_values(D* dst, const E* src, int64_t n) {
    std::vector<E> buf(size_t(std::min<int64_t>(n, kChunk)));
    for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
      const int64_t m = std::min<int64_t>(kChunk, n - i0);
      download(buf.data(), src + i0, size_t(m) * sizeof(E));
      for (int64_t i = 0; i < m; i++) dst[i0 + i] = D(to_double(buf[size_t(i)]));
    }
  }

  // ---- linear ------------------------------------------------------------------------------------
  void linear_forward(T* y, const T* x, const T* W, const T* b, int64_t M, int64_t K, int64_t N, bool accumulate) {
    cuda::gemm<T, T>(false, false, M, N, K, 1.0f, x, K, W, K, accumulate ? 1.0f : 0.0f, y, N, stream_);
    if (b) cuda::add_bias<T>(y, b, M, N, stream_);
  }
  void linear_backward(T* dx, G* dW, G* db, const T* dy, const T* x, const T* W, int64_t M, int64_t K, int64_t N) {
    if (dx) cuda::gemm<T, T>(false, true, M, K, N, 1.0f, dy, N, W, K, 1.0f, dx, K, stream_);
    if (dW) cuda::gemm<T, G>(true, true, N, K, M, 1.0f, dy, N, x, K, 1.0f, dW, K, stream_);
    if (db) cuda::bias_backward<T>(db, dy, M, N, stream_);
  }
  void add_bias(T* y, const T* b, int64_t M, int64_t N) { cuda::add_bias<T>(y, b, M, N, stream_); }
  void bias_backward(G* db, const T* dy, int64_t M, int64_t N) { cuda::bias_backward<T>(db, dy, M, N, stream_); }
  template <typename C>
  void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const T* A, int64_t lda, const T* B,
            int64_t ldb, double beta, C* out, int64_t ldc) {
    cuda::gemm<T, C>(ta, tb, M, N, K, float(alpha), A, lda, B, ldb, float(beta), out, ldc, stream_);
  }
  // Frozen weights in a GEMM's own layout (the CPU backend's inference panels): cuBLASLt reads
  // row-major weights as they are, so nothing is packed here.
  bool pack_for_inference(T*, int64_t, int64_t) { return false; }
  void unpack_for_inference() {}
  int64_t packed_for_inference() const { return 0; }

  // ---- NF4 (QLoRA) -------------------------------------------------------------------------------
  // Quantized on the device from host floats, a chunk at a time (a float staging buffer of at most
  // kChunk elements: the full-precision matrix is never on the device as a whole), bit-identical
  // to the CPU's quantizer (cuda/quant.cuh). Compute dequantizes a layer into ONE reused workspace
  // buffer of T, sized by the largest quantized matrix, and runs the ordinary GEMM on it. (A GEMM
  // that dequantizes NF4 tiles in shared memory, with no workspace, is a later optimisation.)
  // An NF4 matrix [rows, cols] with no rows yet (each checkpoint tensor joins it as it loads); the
  // dequantization workspace grows to the largest matrix so far.
  std::unique_ptr<Nf4> nf4_matrix(int64_t rows, int64_t cols) {
    ensure_maps();
    auto q = std::make_unique<Nf4>();
    q->rows = rows, q->cols = cols, q->stream = stream_;
    const size_t ws = nf4_workspace_bytes(rows, cols);
    if (ws > nf4_ws_bytes_) {
      if (nf4_ws_) release(nf4_ws_);
      nf4_ws_ = nullptr, nf4_ws_bytes_ = 0;
      nf4_ws_ = static_cast<T*>(alloc(MemKind::Workspace, ws));
      nf4_ws_bytes_ = ws;
    }
    return q;
  }
  // Rows [sg.row0, sg.row0 + sg.rows) of q from w[sg.rows * cols] host floats: one NF4 tensor in
  // its own allocation, through a float staging buffer of at most kChunk elements.
  void nf4_quantize_rows(Nf4& q, const float* w, const Segment& sg, bool double_quant) {
    const int64_t cols = q.cols, n = sg.rows * cols, blocks = (n + cpu::kNf4Block - 1) / cpu::kNf4Block;
    const size_t bytes = nf4_bytes_for(n, double_quant);
    uint8_t* at = static_cast<uint8_t*>(alloc(MemKind::Weights, bytes));
    q.blocks.push_back(at);
    q.bytes += bytes;
    auto carve = [&](size_t b) {
      uint8_t* p = at;
      at += align_up(b);
      return p;
    };
    typename Nf4::Part pt;
    pt.row0 = sg.row0, pt.rows = sg.rows;
    pt.packed = carve(size_t((n + 1) / 2));
    float* absmax = nullptr;  // the fp32 scales: the part's own, or a temporary that double quantization codes
    if (double_quant) {
      pt.absmax_q = carve(size_t(blocks));
      pt.absmax2 = reinterpret_cast<float*>(carve(size_t((blocks + cpu::kQ8Block - 1) / cpu::kQ8Block) * 4));
      pt.offset_dev = reinterpret_cast<float*>(carve(4));
      SFT_CUDA_CHECK(cudaMallocAsync(&absmax, size_t(std::max<int64_t>(blocks, 1)) * 4, stream_));
    } else {
      pt.absmax = absmax = reinterpret_cast<float*>(carve(size_t(blocks) * 4));
    }
    float* stage = nullptr;
    SFT_CUDA_CHECK(cudaMallocAsync(&stage, size_t(std::max<int64_t>(1, std::min(n, kChunk))) * sizeof(float), stream_));
    // kChunk is a multiple of 64: every chunk starts a block and a byte.
    for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
      const int64_t m = std::min(kChunk, n - c0);
      upload(stage, w + c0, size_t(m) * sizeof(float));
      cuda::nf4_quantize<float>(pt.packed + c0 / 2, absmax + c0 / cpu::kNf4Block, stage, m, stream_);
    }
    SFT_CUDA_CHECK(cudaFreeAsync(stage, stream_));
    if (double_quant) {
      cuda::nf4_double_quantize(pt.absmax_q, pt.absmax2, pt.offset_dev, absmax, maps_, blocks, stream_);
      download(&pt.offset, pt.offset_dev, 4);
      SFT_CUDA_CHECK(cudaFreeAsync(absmax, stream_));
    }
    q.parts.push_back(pt);
  }
  std::unique_ptr<Nf4> nf4_quantize(const float* w, int64_t rows, int64_t cols, const std::vector<Segment>& segs,
                                    bool double_quant) {
    auto q = nf4_matrix(rows, cols);
    for (const auto& sg : segs) nf4_quantize_rows(*q, w + sg.row0 * cols, sg, double_quant);
    return q;
  }
  // The value a T holds for v, as a float: what a weight uploaded in T and read back gives.
  static float as_stored(double v) { return float(to_double(from_double<T>(v))); }
  static size_t nf4_bytes(const Nf4& q) { return q.bytes; }
  // What nf4_quantize takes on the device for one tensor of n elements (its parts 256-byte aligned).
  static size_t nf4_bytes_for(int64_t n, bool double_quant) {
    const size_t blocks = size_t((n + cpu::kNf4Block - 1) / cpu::kNf4Block);
    const size_t packed = align_up(size_t((n + 1) / 2));
    if (!double_quant) return packed + align_up(blocks * 4);
    return packed + align_up(blocks) + align_up((blocks + cpu::kQ8Block - 1) / cpu::kQ8Block * 4) + align_up(4);
  }
  // The one dequantization buffer compute uses for a matrix [rows, cols] (the largest one counts).
  static size_t nf4_workspace_bytes(int64_t rows, int64_t cols) { return align_up(size_t(rows * cols) * sizeof(T)); }
  // Rows [r0, r0 + n) dequantized into host floats (merging, checks).
  void nf4_decode_rows(float* out, const Nf4& q, int64_t r0, int64_t n) {
    if (n <= 0) return;
    float* tmp = nullptr;
    SFT_CUDA_CHECK(cudaMallocAsync(&tmp, size_t(n * q.cols) * sizeof(float), stream_));
    int64_t covered = 0;
    for (const auto& pt : q.parts) {
      const int64_t ra = std::max(r0, pt.row0), rb = std::min(r0 + n, pt.row0 + pt.rows);
      if (ra >= rb) continue;
      nf4_decode_part(tmp + (ra - r0) * q.cols, pt, (ra - pt.row0) * q.cols, (rb - ra) * q.cols);
      covered += rb - ra;
    }
    if (covered == n) download(out, tmp, size_t(n * q.cols) * sizeof(float));
    SFT_CUDA_CHECK(cudaFreeAsync(tmp, stream_));
    if (covered != n) throw std::runtime_error("nf4_decode_rows: rows out of range of the NF4 weight");
  }
  void linear_forward_nf4(T* y, const T* x, const Nf4& W, int64_t M, int64_t K, int64_t N, bool accumulate) {
    linear_forward(y, x, nf4_dequantized(W), nullptr, M, K, N, accumulate);
  }
  // dx += dy W (the base is frozen: no weight gradient).
  void linear_backward_nf4(T* dx, const T* dy, const Nf4& W, int64_t M, int64_t K, int64_t N) {
    if (dx) linear_backward(dx, nullptr, nullptr, dy, nullptr, nf4_dequantized(W), M, K, N);
  }

  // ---- norms -------------------------------------------------------------------------------------
  void rmsnorm_forward(T* y, G* rstd, const T* x, const T* w, int64_t N, int64_t C, double eps) {
    cuda::rmsnorm_forward<T>(y, rstd, x, w, N, C, eps, stream_);
  }
  void rmsnorm_backward(T* dx, G* dw, const T* dy, const T* x, const T* w, const G* rstd, int64_t N, int64_t C) {
    cuda::rmsnorm_backward<T>(dx, dw, dy, x, w, rstd, N, C, stream_);
  }
  void layernorm_forward(T* y, G* mean, G* rstd, const T* x, const T* w, const T* b, int64_t N, int64_t C, double eps) {
    cuda::layernorm_forward<T>(y, mean, rstd, x, w, b, N, C, eps, stream_);
  }
  void layernorm_backward(T* dx, G* dw, G* db, const T* dy, const T* x, const T* w, const G* mean, const G* rstd,
                          int64_t N, int64_t C) {
    cuda::layernorm_backward<T>(dx, dw, db, dy, x, w, mean, rstd, N, C, stream_);
  }
  void l2norm_rows_forward(T* out, const T* in, int64_t R, int64_t C, double eps) {
    cuda::l2norm_rows_forward<T>(out, in, R, C, eps, stream_);
  }
  void l2norm_rows_backward(G* din, const G* dout, const T* in, int64_t R, int64_t C, double eps) {
    cuda::l2norm_rows_backward<T>(din, dout, in, R, C, eps, stream_);
  }

  // ---- rotary embeddings, attention ----------------------------------------------------------------
  void rope_forward(T* x, int64_t ld, int64_t rows, int64_t T_, int64_t p0, int heads, int hd, const G* cos, const G* sin) {
    cuda::rope_forward<T>(x, ld, rows, T_, p0, heads, hd, cos, sin, stream_);
  }
  void rope_backward(T* dx, int64_t ld, int64_t rows, int64_t T_, int64_t p0, int heads, int hd, const G* cos,
                     const G* sin) {
    cuda::rope_backward<T>(dx, ld, rows, T_, p0, heads, hd, cos, sin, stream_);
  }
  void attention_forward(T* out, Saved* lse, const T* q, int64_t ldq, const T* k, const T* v, int64_t ldkv, int64_t B,
                         int64_t Tq, int64_t Tk, int64_t p0, int nh, int nkv, int hd) {
    cuda::attention_forward<T>(out, lse, q, ldq, k, v, ldkv, B, Tq, Tk, p0, nh, nkv, hd, stream_);
  }
  void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const Saved* lse, const T* q, int64_t ldq,
                          const T* k, const T* v, int64_t ldkv, int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh,
                          int nkv, int hd) {
    cuda::attention_backward<T>(dq, dk, dv, dout, out, lse, q, ldq, k, v, ldkv, B, Tq, Tk, p0, nh, nkv, hd, stream_);
  }
  // The slopes are the CPU's (fp32 powers of an fp32 base, as transformers computes them).
  void alibi_slopes(G* out, int n) {
    std::vector<float> s(static_cast<size_t>(n));
    cpu::alibi_slopes<float>(s.data(), n);
    upload(out, s.data(), s.size() * sizeof(float));
  }
  void alibi_attention_forward(T* out, Saved* lse, const T* q, int64_t ldq, int64_t qhs, const T* k, const T* v,
                               int64_t ldkv, int64_t kvhs, const G* slopes, int64_t B, int64_t Tq, int64_t Tk, int64_t p0,
                               int nh, int hd) {
    cuda::alibi_attention_forward<T>(out, lse, q, ldq, qhs, k, v, ldkv, kvhs, slopes, B, Tq, Tk, p0, nh, hd, stream_);
  }
  void alibi_attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const Saved* lse, const T* q, int64_t ldq,
                                int64_t qhs, const T* k, const T* v, int64_t ldkv, int64_t kvhs, const G* slopes,
                                int64_t B, int64_t Tq, int64_t Tk, int64_t p0, int nh, int hd) {
    cuda::alibi_attention_backward<T>(dq, dk, dv, dout, out, lse, q, ldq, qhs, k, v, ldkv, kvhs, slopes, B, Tq, Tk, p0, nh,
                                      hd, stream_);
  }

  // ---- activations, embedding, loss ----------------------------------------------------------------
  void swiglu_forward(T* out, const T* gate, const T* up, int64_t n) { cuda::swiglu_forward<T>(out, gate, up, n, stream_); }
  void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t n) {
    cuda::swiglu_backward<T>(dgate, dup, dout, gate, up, n, stream_);
  }
  void gelu_forward(T* out, const T* x, int64_t n) { cuda::gelu_tanh_forward<T>(out, x, n, stream_); }
  void gelu_backward(T* dx, const T* dout, const T* x, int64_t n) { cuda::gelu_tanh_backward<T>(dx, dout, x, n, stream_); }
  void embedding_forward(T* out, const int32_t* ids, const T* table, int64_t n, int64_t C) {
    cuda::embedding_forward<T>(out, ids, table, n, C, stream_);
  }
  void embedding_backward(G* dtable, const T* dout, const int32_t* ids, int64_t n, int64_t C) {
    cuda::embedding_backward<T>(dtable, dout, ids, n, C, stream_);
  }
  void cross_entropy_rows(T* logits, const int32_t* targets, int64_t N, int64_t V, double scale, bool grad, double* row_loss) {
    cuda::cross_entropy_rows<T>(logits, targets, N, V, float(scale), grad, row_loss, stream_);
  }
  double loss_total(const double* row_loss, const int32_t* targets, int64_t N, int64_t* count) {
    return cuda::loss_total(row_loss, targets, N, count, stream_);
  }

  // ---- LoRA dropout (masks from core/random.h, as the CPU's) ----------------------------------------
  void dropout_forward(T* out, const T* x, int64_t rows, int64_t cols, double p, uint64_t key) {
    cuda::dropout_forward<T>(out, x, rows * cols, p, key, stream_);
  }
  void dropout_backward_add(T* dx, const T* dxd, int64_t n, double p, uint64_t key) {
    cuda::dropout_backward_add<T>(dx, dxd, n, p, key, stream_);
  }

  // ---- data movement -------------------------------------------------------------------------------
  void copy_2d(T* dst, int64_t ld_dst, const T* src, int64_t ld_src, int64_t rows, int64_t cols) {
    cuda::copy_2d<T>(dst, ld_dst, src, ld_src, rows, cols, stream_);
  }
  template <typename D, typename S>
  void add_into(D* dst, const S* src, int64_t n) { cuda::add_into<D, S>(dst, src, n, stream_); }
  template <typename D, typename S>
  void add_rows_into(D* dst, const S* src, int64_t rows, int64_t cols, int64_t ld_src) {
    cuda::add_rows_into<D, S>(dst, src, rows, cols, ld_src, stream_);
  }
  template <typename S, typename D>
  void cast(D* dst, const S* src, int64_t n) { cuda::cast<S, D>(dst, src, n, stream_); }
  template <typename E>
  void fill_normal(E* dst, int64_t n, uint64_t key, double mean, double std_) {
    cuda::fill_normal<E>(dst, n, key, mean, std_, stream_);
  }

  // ---- optimizer ----------------------------------------------------------------------------------
  double sum_squares(const G* g, int64_t n) {
    const double norm = cuda::global_grad_norm(&g, &n, 1, stream_);
    return norm * norm;
  }
  // The same over `count` tensors, in calls of at most 65535 (global_grad_norm's grid limit).
  double sum_squares(const G* const* xs, const int64_t* ns, int count) {
    double ss = 0;
    for (int t0 = 0; t0 < count; t0 += 65535) {
      const double norm = cuda::global_grad_norm(xs + t0, ns + t0, std::min(count - t0, 65535), stream_);
      ss += norm * norm;
    }
    return ss;
  }
  // Moments in a paged (pinned host) block go through the pager, in pages overlapped with the
  // update; the result is the unpaged kernel's, bit for bit.
  void adamw_update(G* p, const G* g, G* m, G* v, int64_t n, double lr, double b1, double b2, double eps, double wd,
                    int64_t t, double grad_scale) {
    if (on_host(m)) pager().update(p, g, m, v, n, lr, b1, b2, eps, wd, t, grad_scale, stream_);
    else cuda::adamw_update(p, g, m, v, n, lr, b1, b2, eps, wd, t, grad_scale, stream_);
  }
  void adamw_update_8bit(G* p, const G* g, uint8_t* m8, float* m_absmax, uint8_t* v8, float* v_absmax, int64_t n, double lr,
                         double b1, double b2, double eps, double wd, int64_t t, double grad_scale) {
    ensure_maps();
    if (on_host(m8))
      pager().update_8bit(p, g, m8, m_absmax, v8, v_absmax, maps_, maps_ + 256, n, lr, b1, b2, eps, wd, t, grad_scale, stream_);
    else
      cuda::adamw_update_8bit(p, g, m8, m_absmax, v8, v_absmax, maps_, maps_ + 256, n, lr, b1, b2, eps, wd, t, grad_scale,
                              stream_);
  }
  // Paged AdamW (paged_adamw_32bit / _8bit): optimizer blocks allocated from now on live in pinned
  // host memory and page through kPageElems-element device buffers.
  void page_optimizer(bool on) { paged_ = on; }
  // What paging keeps on the device: the pager's page buffers.
  static size_t paged_optimizer_bytes(bool eight_bit) { return cuda::AdamWPager::device_bytes(kPageElems, eight_bit); }
  static uint8_t zero_code_signed() { return cpu::map_index(cpu::dynamic_map_signed(), 0.0f); }
  static uint8_t zero_code_unsigned() { return cpu::map_index(cpu::dynamic_map_unsigned(), 0.0f); }

  cudaStream_t stream() {
    ensure();
    return stream_;
  }

 private:
  static constexpr int64_t kChunk = int64_t(1) << 22;  // host staging: 4 Mi elements at a time
  static constexpr int64_t kPageElems = int64_t(1) << 20;  // paged AdamW: 1 Mi elements a page (whole 256-blocks)

  bool on_host(const void* p) const {
    const char* c = static_cast<const char*>(p);
    for (const auto& b : host_blocks_)
      if (c >= b.first && c < b.first + b.second) return true;
    return false;
  }
  cuda::AdamWPager& pager() {
    if (!pager_) pager_ = std::make_unique<cuda::AdamWPager>(kPageElems);
    return *pager_;
  }

  static std::string mib(size_t b) { return std::to_string((b + (1 << 20) - 1) >> 20) + " MiB"; }

  template <typename E>
  static E from_double(double x) {
    if constexpr (std::is_same<E, cuda::bf16>::value) return __float2bfloat16_rn(float(x));
    else return E(x);
  }
  template <typename E>
  static double to_double(E x) {
    if constexpr (std::is_same<E, cuda::bf16>::value) return double(__bfloat162float(x));
    else return double(x);
  }

  template <typename E, typename F>
  void upload_converted(E* dst, int64_t n, F value) {
    std::vector<E> buf(size_t(std::min<int64_t>(n, kChunk)));
    for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
      const int64_t m = std::min<int64_t>(kChunk, n - i0);
      for (int64_t i = 0; i < m; i++) buf[size_t(i)] = from_double<E>(value(i0 + i));
      upload(dst + i0, buf.data(), size_t(m) * sizeof(E));  // staged before it returns: buf may be refilled
    }
  }

  // The device and stream are taken on first use, so a meta model (planning only) needs no GPU.
  void ensure() {
    if (stream_) return;
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
      cudaGetLastError();
      throw std::runtime_error(std::string("no usable CUDA device (") + (e != cudaSuccess ? cudaGetErrorString(e) : "none found") + ")");
    }
    // One GPU per data-parallel rank on a machine (process_device: the launcher's local rank).
    const int dev = cuda::process_device() % n;
    SFT_CUDA_CHECK(cudaSetDevice(dev));
    SFT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    // Keep what the kernels' stream-ordered temporaries freed, instead of returning it to the driver.
    cudaMemPool_t pool;
    if (cudaDeviceGetDefaultMemPool(&pool, dev) == cudaSuccess) {
      uint64_t keep = ~uint64_t(0);
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
    }
    cudaGetLastError();
  }

  // bitsandbytes' signed then unsigned dynamic map (256 floats each), uploaded on first use: NF4's
  // double quantization and 8-bit AdamW's moments.
  void ensure_maps() {
    if (maps_) return;
    ensure();
    std::vector<float> m(cpu::dynamic_map_signed());
    m.insert(m.end(), cpu::dynamic_map_unsigned().begin(), cpu::dynamic_map_unsigned().end());
    SFT_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&maps_), m.size() * sizeof(float)));
    upload(maps_, m.data(), m.size() * sizeof(float));
  }

  // Elements [first, first + n) of one NF4 part into out (E = float or T).
  template <typename E>
  void nf4_decode_part(E* out, const typename Nf4::Part& pt, int64_t first, int64_t n) {
    if (pt.absmax_q) cuda::nf4_dequantize_dq<E>(out, pt.packed, pt.absmax_q, pt.absmax2, maps_, pt.offset, n, stream_, first);
    else cuda::nf4_dequantize<E>(out, pt.packed, pt.absmax, n, stream_, first);
  }
  // W dequantized into the workspace (valid until the next call: ops are ordered on one stream).
  const T* nf4_dequantized(const Nf4& W) {
    if (nf4_workspace_bytes(W.rows, W.cols) > nf4_ws_bytes_) throw std::runtime_error("NF4 weight larger than the dequantization workspace");
    for (const auto& pt : W.parts) nf4_decode_part<T>(nf4_ws_ + pt.row0 * W.cols, pt, 0, pt.rows * W.cols);
    return nf4_ws_;
  }

  cudaStream_t stream_ = nullptr;
  float* maps_ = nullptr;  // device: signed map [256] then unsigned map [256]
  T* nf4_ws_ = nullptr;    // the dequantized layer compute reads (Workspace)
  size_t nf4_ws_bytes_ = 0;
  bool paged_ = false;                                    // optimizer blocks in pinned host memory
  std::vector<std::pair<char*, size_t>> host_blocks_;     // those blocks (base, bytes)
  std::unique_ptr<cuda::AdamWPager> pager_;
};

}  // namespace sft
