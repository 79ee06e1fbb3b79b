// ZeRO-1's slice arithmetic (model/zero_shard.h), checked against what it promises rather than
// against itself: the slices tile the concatenation in rank order, every inner cut is a tensor's
// start plus a multiple of 256 (so each 8-bit block has one owner), each cut is the one just below
// the ideal total * r / size, and the per-tensor parts tile each tensor.
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "model/zero_shard.h"

namespace {

void ok(bool pass, const std::string& what) {
  if (!pass) failures++;
  std::printf("%s zero shard: %s\n", pass ? "ok  " : "FAIL", what.c_str());
}

// Every property for one case; an empty string when all hold.
std::string violations(const std::vector<int64_t>& numels, int size, int64_t align) {
  const std::vector<int64_t> b = sft::model::shard_bounds(numels, size, align);
  std::vector<int64_t> starts;
  int64_t total = 0;
  for (int64_t n : numels) starts.push_back(total), total += n;
  if (int(b.size()) != size + 1 || b[0] != 0 || b[size_t(size)] != total) return "ends";
  for (int r = 1; r < size; r++) {
    if (b[size_t(r)] < b[size_t(r) - 1]) return "order at " + std::to_string(r);
    // The tensor holding the ideal cut, found by a plain scan in 128-bit arithmetic.
    const int64_t want = int64_t((__int128)total * r / size);
    size_t i = 0;
    while (i + 1 < numels.size() && want >= starts[i] + numels[i]) i++;
    const int64_t expect = want >= total ? total : starts[i] + (want - starts[i]) / align * align;
    if (b[size_t(r)] != expect) return "cut " + std::to_string(r) + " is " + std::to_string(b[size_t(r)]) + ", expected " + std::to_string(expect);
    if (want - b[size_t(r)] >= align) return "cut " + std::to_string(r) + " more than a block below the ideal";
  }
  // Parts of each tensor: contiguous, in rank order, covering it exactly once, on block starts.
  for (size_t i = 0; i < numels.size(); i++) {
    int64_t covered = 0;
    for (int r = 0; r < size; r++) {
      auto [lo, hi] = sft::model::shard_part(starts[i], numels[i], b[size_t(r)], b[size_t(r) + 1]);
      if (lo == hi) continue;
      if (lo != covered) return "tensor " + std::to_string(i) + ": gap or overlap at rank " + std::to_string(r);
      if (lo % align) return "tensor " + std::to_string(i) + ": part starts inside a block";
      covered = hi;
    }
    if (covered != numels[i]) return "tensor " + std::to_string(i) + " not covered";
  }
  return "";
}

}  // namespace

void check_zero_shard() {
  // A LoRA-like list (small A/B tensors) and a full-fine-tuning-like one (a few big ones).
  ok(violations({512, 512, 768, 512, 300, 4096}, 2, 256).empty(), "LoRA-sized tensors over 2 ranks");
  ok(violations({9600, 3072, 3072, 32, 32, 4608}, 3, 256).empty(), "full-sized tensors over 3 ranks");
  // Hand-computed: 2 tensors of 1000 over 2 ranks: the ideal cut 1000 is tensor 1's start.
  auto b = sft::model::shard_bounds({1000, 1000}, 2, 256);
  ok(b == std::vector<int64_t>({0, 1000, 2000}), "a cut on a tensor boundary stays there");
  // One tensor of 1000 over 4 ranks: ideal cuts 250, 500, 750 -> 0, 256, 512 (rank 0 empty).
  b = sft::model::shard_bounds({1000}, 4, 256);
  ok(b == std::vector<int64_t>({0, 0, 256, 512, 1000}), "cuts move down to 256-blocks (0 256 512)");
  ok(violations({100}, 8, 256).empty(), "more ranks than blocks: empty slices");
  ok(violations({}, 2, 256).empty() && sft::model::shard_bounds({}, 2, 256) == std::vector<int64_t>({0, 0, 0}), "nothing trainable");
  // Random lists, world sizes 1..9, against the properties above.
  std::mt19937_64 rng(7);
  std::string bad;
  for (int t = 0; t < 2000 && bad.empty(); t++) {
    std::vector<int64_t> ns(1 + rng() % 12);
    for (auto& n : ns) n = 1 + int64_t(rng() % (rng() % 2 ? 600 : 70000));
    const int size = 1 + int(rng() % 9);
    bad = violations(ns, size, 256);
  }
  ok(bad.empty(), "2000 random tensor lists over 1-9 ranks" + (bad.empty() ? "" : ": " + bad));
  // A 7B-sized total over 64 ranks: no overflow in total * r.
  ok(violations({int64_t(1) << 36, int64_t(1) << 35}, 64, 256).empty(), "2^36 + 2^35 elements over 64 ranks");
}
