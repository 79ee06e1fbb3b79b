#include "cpu/inference_panels.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace sft::cpu {

void gemm_unpack_b(const PackedB& B, float* dst) {
  // gemm_pack_b's layout: column blocks of nc, each k blocks of kc, each nr-wide k-major strips.
  for (int64_t jc = 0; jc < B.N; jc += B.nc) {
    const int64_t nc = std::min(B.nc, B.N - jc), nstrips = (nc + B.nr - 1) / B.nr;
    for (int64_t pc = 0; pc < B.K; pc += B.kc) {
      const int64_t kc = std::min(B.kc, B.K - pc);
      const float* panel = B.data + jc * B.K + nstrips * B.nr * pc;
      for (int64_t n = jc; n < jc + nc; n++) {
        const float* s = panel + (n - jc) / B.nr * kc * B.nr + (n - jc) % B.nr;
        for (int64_t k = 0; k < kc; k++) dst[n * B.K + pc + k] = s[k * B.nr];
      }
    }
  }
}

namespace {

// gemm_pack_b's column block jc (nc columns) takes floats [jc K, (jc + nc) K) of the panels: the
// place rows jc .. jc + nc take row-major, when nc is a multiple of nr (pack's condition). So a
// weight goes between the layouts one column block at a time through a transient of nc x K floats
// (a 152k-row lm_head would otherwise need a second copy of itself: 2 GiB at 3584 columns), and
// a block packed alone is that block of the whole (the blocking does not depend on N).
thread_local std::vector<float> g_block;

void unpack_in_place(const PackedB& pb) {
  float* data = const_cast<float*>(pb.data);
  for (int64_t jc = 0; jc < pb.N; jc += pb.nc) {
    PackedB block = pb;
    block.N = std::min(pb.nc, pb.N - jc);
    block.data = data + jc * pb.K;
    g_block.resize(size_t(block.N * pb.K));
    gemm_unpack_b(block, g_block.data());
    std::memcpy(data + jc * pb.K, g_block.data(), g_block.size() * sizeof(float));
  }
}

PackedB pack_in_place(float* w, int64_t N, int64_t K) {
  PackedB pb = gemm_packed_layout(N, K);
  pb.data = w;
  for (int64_t jc = 0; jc < N; jc += pb.nc) {
    const int64_t nc = std::min(pb.nc, N - jc);
    g_block.assign(w + jc * K, w + (jc + nc) * K);
    PackedB block;
    gemm_pack_b(block, w + jc * K, false, nc, K, g_block.data(), K);
  }
  return pb;
}

}  // namespace

bool InferencePanels::pack(float* w, int64_t N, int64_t K) {
  if (packed_.count(w)) return true;
  if (N <= 0 || K <= 0 || gemm_packed_b_floats(N, K) != size_t(N * K)) return false;
  // One strip (N <= nr): gemm_prepacked takes the skinny kernel from 2 mr rows on, which sums k in
  // one pass where the blocked driver (fewer rows) sums kc blocks: a row's bits would depend on M.
  const PackedB layout = gemm_packed_layout(N, K);
  if (N <= layout.nr || layout.nc % layout.nr != 0) return false;
  packed_[w] = pack_in_place(w, N, K);
  return true;
}

const PackedB* InferencePanels::find(const float* w) {
  auto it = packed_.find(w);
  if (it == packed_.end()) return nullptr;
  if (gemm_packed_current(it->second)) return &it->second;
  // Packed for other kernels or blocking: back to row-major, then this layout (pack says if it fits).
  const PackedB old = it->second;
  packed_.erase(it);
  unpack_in_place(old);
  float* data = const_cast<float*>(old.data);
  return pack(data, old.N, old.K) ? &packed_.at(data) : nullptr;
}

void InferencePanels::unpack_all() {
  for (const auto& [w, pb] : packed_) unpack_in_place(pb);
  packed_.clear();
  g_block = std::vector<float>();  // the transient goes with the last weight
}

}  // namespace sft::cpu
