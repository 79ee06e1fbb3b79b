// Frozen fp32 weights of an inference model (chat / score / eval / serve: nothing trains) kept in
// the fp32 GEMM's panel layout (gemm_pack_b), packed once at load instead of by every prefill or
// scoring GEMM (issue 13: packing was ~20 % of serve's time). The panels REPLACE the row-major
// values in the same memory (no second copy; packing and unpacking go through one column block,
// nc x K floats): a weight is packed in place only when its panels
// take exactly N * K floats (N a multiple of the kernels' nr, and more than one strip); others stay
// row-major.
// The layout belongs to the kernels (nr) and blocking (kc, nc) in use when packed: find() repacks
// lazily after set_isa / set_gemm_blocking changed them (tests switch ISA at run time), through
// row-major, so the values never change. Training never sees panels: unpack_all() restores W.
#pragma once
#include <cstdint>
#include <unordered_map>

#include "cpu/gemm.h"

namespace sft::cpu {

// dst[n * K + k] = op(B)[n, k] from B's panels: the inverse of gemm_pack_b (tb = false).
void gemm_unpack_b(const PackedB& B, float* dst);

class InferencePanels {
 public:
  // Packs w [N, K] (row-major) in place; false (w untouched) when the panels would not fit, or
  // N <= nr (see pack).
  bool pack(float* w, int64_t N, int64_t K);
  // w's panels in the current kernels' layout, or null when w is row-major.
  const PackedB* find(const float* w);
  // Every packed weight back to row-major (before anything reads, writes or trains them).
  void unpack_all();
  bool empty() const { return packed_.empty(); }
  int64_t size() const { return int64_t(packed_.size()); }
  bool contains(const void* w) const { return packed_.count(static_cast<const float*>(w)) != 0; }

 private:
  std::unordered_map<const float*, PackedB> packed_;
};

}  // namespace sft::cpu
