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

bool InferencePanels::pack(float* w, int64_t N, int64_t K) {
  if (packed_.count(w)) return true;
  if (N <= 0 || K <= 0 || gemm_packed_b_floats(N, K) != size_t(N * K)) return false;
  // One strip (N <= nr): gemm_prepacked takes the skinny kernel from 2 mr rows on, which sums k in
  // one pass where the blocked driver (fewer rows) sums kc blocks: a row's bits would depend on M.
  if (N <= gemm_packed_layout(N, K).nr) return false;
  const std::vector<float> rows(w, w + N * K);  // transient: one matrix
  PackedB pb;
  gemm_pack_b(pb, w, false, N, K, rows.data(), K);
  packed_[w] = pb;
  return true;
}

const PackedB* InferencePanels::find(const float* w) {
  auto it = packed_.find(w);
  if (it == packed_.end()) return nullptr;
  PackedB& pb = it->second;
  if (gemm_packed_current(pb)) return &pb;
  // Packed for other kernels or blocking: back to row-major, then this layout (pack says if it fits).
  float* data = const_cast<float*>(pb.data);
  std::vector<float> rows(size_t(pb.N * pb.K));
  gemm_unpack_b(pb, rows.data());
  std::memcpy(data, rows.data(), rows.size() * sizeof(float));
  const int64_t N = pb.N, K = pb.K;
  packed_.erase(it);
  if (!pack(data, N, K)) return nullptr;
  return &packed_[w];
}

void InferencePanels::unpack_all() {
  std::vector<float> rows;
  for (auto& [w, pb] : packed_) {
    rows.resize(size_t(pb.N * pb.K));
    gemm_unpack_b(pb, rows.data());
    std::memcpy(const_cast<float*>(pb.data), rows.data(), rows.size() * sizeof(float));
  }
  packed_.clear();
}

}  // namespace sft::cpu
