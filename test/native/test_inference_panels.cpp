// Inference weights kept in the GEMM's panel layout (cpu/inference_panels.h): packing in place,
// unpacking back (bit for bit), lazy repacking after an ISA switch, and the products from the
// panels: against a double reference for every M, bit for bit against the row-major gemm where
// both take the blocked GEMM (M > kGemvMaxM), and each row independent of the rows beside it
// (continuous batching's decode rows = a lone request's).
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "cpu/gemm.h"
#include "cpu/inference_panels.h"
#include "cpu/isa.h"
#include "cpu/kernels.h"

using namespace sft::cpu;

namespace {

double max_rel_vs_double(const std::vector<float>& C, const std::vector<float>& A, const std::vector<float>& W, int64_t M,
                         int64_t N, int64_t K) {
  double num = 0, den = 0;
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      double s = 0;
      for (int64_t k = 0; k < K; k++) s += double(A[size_t(m * K + k)]) * double(W[size_t(n * K + k)]);
      num = std::max(num, std::abs(s - double(C[size_t(m * N + n)])));
      den = std::max(den, std::abs(s));
    }
  return num / std::max(den, 1e-30);
}

// B [N, K] into gemm_pack_b's panels (round_up(N, nr) * K floats: any N, padded).
std::vector<float> packed(const std::vector<float>& W, int64_t N, int64_t K, PackedB& pb) {
  std::vector<float> P(gemm_packed_b_floats(N, K) + 16);
  gemm_pack_b(pb, P.data(), false, N, K, W.data(), K);
  return P;
}

// The panel GEMV kernel itself (kernels.h gemv_panels) against a double reference: N not a
// multiple of nr (a partial last strip), one column, K odd and K = 1, M = 1..8, strides wider than
// the rows, beta 0 and 1, and a strip range that is not the whole: the columns outside it, and the
// padding past N in y's stride, keep their values.
void check_gemv_panels_kernel(Isa isa, bool tiny, std::mt19937_64& rng) {
  std::normal_distribution<float> nd;
  const int64_t nr = kernels().nr;
  double worst = 0;
  bool untouched = true;
  for (int64_t N : {int64_t(1), int64_t(5), nr - 1, nr + 3, 2 * nr + 5, 3 * nr})
    for (int64_t K : {int64_t(1), int64_t(7), int64_t(37), int64_t(300)}) {
      std::vector<float> W(size_t(N * K));
      for (auto& v : W) v = nd(rng);
      PackedB pb;
      const std::vector<float> P = packed(W, N, K, pb);
      const int64_t strips = (N + nr - 1) / nr;
      for (int64_t M = 1; M <= 8; M++)
        for (float beta : {0.f, 1.f})
          for (bool part : {false, true}) {
            if (part && strips < 3) continue;
            const int64_t s0 = part ? 1 : 0, s1 = part ? strips - 1 : strips;
            const int64_t ldx = K + 3, ldy = N + 2;
            std::vector<float> x(size_t(M * ldx)), y(size_t(M * ldy));
            for (auto& v : x) v = nd(rng);
            for (auto& v : y) v = nd(rng);
            const std::vector<float> y0 = y;
            kernels().gemv_panels(M, s0, s1, x.data(), ldx, P.data(), N, K, pb.kc, pb.nc, y.data(), ldy, 1.f, beta);
            double num = 0, den = 0;
            for (int64_t m = 0; m < M; m++)
              for (int64_t n = 0; n < ldy; n++) {
                const size_t i = size_t(m * ldy + n);
                if (n >= N || n < s0 * nr || n >= std::min(N, s1 * nr)) {
                  untouched = untouched && std::memcmp(&y[i], &y0[i], 4) == 0;
                  continue;
                }
                double s = beta * double(y0[i]);
                for (int64_t k = 0; k < K; k++) s += double(x[size_t(m * ldx + k)]) * double(W[size_t(n * K + k)]);
                num = std::max(num, std::abs(s - double(y[i])));
                den = std::max(den, std::abs(s));
              }
            worst = std::max(worst, num / std::max(den, 1e-30));
          }
    }
  const std::string what = std::string(isa_name(isa)) + (tiny ? " (kc 16, nc 2 nr)" : "");
  report("panel GEMV kernel " + what + ": N 1..3nr+, K 1..300, M 1..8, beta 0/1 vs double", worst, 1e-5);
  if (!untouched) failures++;
  std::printf("%s panel GEMV kernel %s: columns outside [s0, s1) and past N untouched\n", untouched ? "ok  " : "FAIL",
              what.c_str());
}

// Decode rows = prefill rows: up to kGemvMaxM rows from the panels (the panel GEMV) give each row the
// bits the blocked GEMM gives it among 20 rows (from the same panels, and from the row-major gemm,
// which packs per call: what scoring and prefill ran before panels), for plain and accumulating
// (beta 1: o_proj, down_proj add into the residual) products, N with a partial last strip too.
void check_decode_rows_equal_prefill(Isa isa, bool tiny, std::mt19937_64& rng) {
  std::normal_distribution<float> nd;
  const int64_t nr = kernels().nr;
  bool same = true;
  for (int64_t N : {2 * nr, 2 * nr + 5})
    for (int64_t K : {int64_t(37), int64_t(300)}) {
      std::vector<float> W(size_t(N * K));
      for (auto& v : W) v = nd(rng);
      PackedB pb;
      const std::vector<float> P = packed(W, N, K, pb);
      const int64_t big = 20;
      std::vector<float> A(size_t(big * K)), Y0(size_t(big * N));
      for (auto& v : A) v = nd(rng);
      for (auto& v : Y0) v = nd(rng);
      for (float beta : {0.f, 1.f}) {
        std::vector<float> prefill = Y0, rowmajor = Y0;
        gemm_prepacked(false, big, 1.f, A.data(), K, pb, beta, prefill.data(), N);
        gemm<float>(false, false, big, N, K, 1.f, A.data(), K, W.data(), K, beta, rowmajor.data(), N);
        same = same && prefill == rowmajor;
        for (int64_t M = 1; M <= kGemvMaxM; M++)
          for (int64_t r0 : {int64_t(0), big - M}) {
            std::vector<float> dec(Y0.begin() + r0 * N, Y0.begin() + (r0 + M) * N);
            gemm_prepacked(false, M, 1.f, A.data() + r0 * K, K, pb, beta, dec.data(), N);
            same = same && std::memcmp(dec.data(), prefill.data() + r0 * N, dec.size() * 4) == 0;
          }
      }
    }
  if (!same) failures++;
  std::printf("%s inference panels %s%s: decode rows (M 1..8, panel GEMV) = the blocked GEMM's rows, bit for bit\n",
              same ? "ok  " : "FAIL", isa_name(isa), tiny ? " (kc 16)" : "");
}

}  // namespace

void check_inference_panels() {
  std::mt19937_64 rng(13);
  std::normal_distribution<float> nd;
  const Isa keep = current_isa();
  for (Isa isa : kAllIsas) {
    if (!isa_available(isa)) continue;
    set_isa(isa);
    for (bool tiny_blocking : {false, true}) {
      // Tiny blocking: K spans several kc blocks (K not a multiple of kc), N several nc blocks.
      if (tiny_blocking) set_gemm_blocking(16, 2 * kernels().mr, 2 * kernels().nr);
      check_gemv_panels_kernel(isa, tiny_blocking, rng);
      check_decode_rows_equal_prefill(isa, tiny_blocking, rng);
      const int64_t nr = kernels().nr;
      double worst = 0;
      bool exact = true, rows_alone = true, unpacked = true, in_place = true;
      for (int64_t N : {2 * nr, 3 * nr}) {
        for (int64_t K : {int64_t(37), int64_t(300)}) {
          std::vector<float> W(size_t(N * K));
          for (auto& v : W) v = nd(rng);
          std::vector<float> Wp = W;
          InferencePanels ip;
          if (!ip.pack(Wp.data(), N, K)) { exact = false; continue; }
          const PackedB* pb = ip.find(Wp.data());
          {  // packed in place a column block at a time = gemm_pack_b of the whole into its own buffer
            PackedB whole;
            const std::vector<float> P = packed(W, N, K, whole);
            in_place = in_place && std::memcmp(P.data(), Wp.data(), Wp.size() * 4) == 0;
          }
          for (int64_t M : {1, 2, 3, 4, 5, 6, 7, 8, 20, 65}) {
            std::vector<float> A(size_t(M * K)), C(size_t(M * N)), R(size_t(M * N));
            for (auto& v : A) v = nd(rng);
            gemm_prepacked(false, M, 1.f, A.data(), K, *pb, 0.f, C.data(), N);
            worst = std::max(worst, max_rel_vs_double(C, A, W, M, N, K));
            if (M > kGemvMaxM) {
              gemm<float>(false, false, M, N, K, 1.f, A.data(), K, W.data(), K, 0.f, R.data(), N);
              exact = exact && std::memcmp(C.data(), R.data(), C.size() * 4) == 0;
            }
            // Each row alone gives the bits it gets beside the others.
            for (int64_t m = 0; m < M; m += 3) {
              std::vector<float> one(static_cast<size_t>(N));
              gemm_prepacked(false, 1, 1.f, A.data() + m * K, K, *pb, 0.f, one.data(), N);
              rows_alone = rows_alone && std::memcmp(one.data(), C.data() + m * N, size_t(N) * 4) == 0;
            }
          }
          ip.unpack_all();
          unpacked = unpacked && std::memcmp(Wp.data(), W.data(), W.size() * 4) == 0 && ip.empty();
        }
      }
      const std::string what = std::string(isa_name(isa)) + (tiny_blocking ? " (kc 16)" : "");
      report("inference panels " + what + ": x W^T from panels, M 1..65, vs double", worst, 1e-5);
      for (auto [ok, s] : {std::pair<bool, const char*>{exact, "bit for bit = row-major gemm (M > 8)"},
                           {rows_alone, "each row = that row alone (M = 1)"},
                           {in_place, "packed in place = gemm_pack_b's panels (N over several nc blocks)"},
                           {unpacked, "unpack restores W bit for bit"}}) {
        if (!ok) failures++;
        std::printf("%s inference panels %s: %s\n", ok ? "ok  " : "FAIL", what.c_str(), s);
      }
      set_gemm_blocking(0, 0, 0);
    }
  }
  // An N the panels would pad, or one strip (N = nr: gemm_prepacked's skinny path from 2 mr rows
  // sums k in one pass, the driver in kc blocks, so rows would depend on M), is left row-major.
  {
    set_isa(Isa::Portable);
    const int64_t nr = kernels().nr;
    std::vector<float> W(size_t((nr + 3) * 40), 1.f);
    InferencePanels ip;
    const bool ok = !ip.pack(W.data(), nr + 3, 40) && ip.find(W.data()) == nullptr && !ip.pack(W.data(), nr, 40) &&
                    ip.empty();
    if (!ok) failures++;
    std::printf("%s inference panels: N not a multiple of nr, or N = nr, stays row-major\n", ok ? "ok  " : "FAIL");
  }
  // Packed under one ISA, used under another: find() repacks, the values (and products) unchanged.
  std::vector<Isa> avail;
  for (Isa isa : kAllIsas)
    if (isa_available(isa)) avail.push_back(isa);
  if (avail.size() >= 2) {
    set_isa(avail.back());
    const int64_t N = 64, K = 300;  // a multiple of every ISA's nr
    std::vector<float> W(size_t(N * K)), A(size_t(4 * K)), C(size_t(4 * N)), R(size_t(4 * N));
    for (auto& v : W) v = nd(rng);
    for (auto& v : A) v = nd(rng);
    std::vector<float> Wp = W;
    InferencePanels ip;
    ip.pack(Wp.data(), N, K);
    set_isa(avail.front());
    const PackedB* pb = ip.find(Wp.data());
    bool ok = pb && pb->nr == kernels().nr;
    if (ok) {
      gemm_prepacked(false, 4, 1.f, A.data(), K, *pb, 0.f, C.data(), N);
      gemm<float>(false, false, 4, N, K, 1.f, A.data(), K, W.data(), K, 0.f, R.data(), N);
      ok = max_rel_vs_double(C, A, W, 4, N, K) < 1e-5;
    }
    ip.unpack_all();
    ok = ok && std::memcmp(Wp.data(), W.data(), W.size() * 4) == 0;
    if (!ok) failures++;
    std::printf("%s inference panels: packed for %s, repacked for %s, W unchanged\n", ok ? "ok  " : "FAIL",
                isa_name(avail.back()), isa_name(avail.front()));
  }
  set_isa(keep);
}
