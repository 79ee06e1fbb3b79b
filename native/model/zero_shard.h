// ZeRO stage 1's slice arithmetic: which trainable elements' optimizer state each rank keeps.
// The trainable tensors, in parameter order and concatenated, are cut into `size` contiguous
// slices of about equal length; a cut that falls inside a tensor is moved down to a multiple of
// `align` elements from that tensor's start (kQ8Block, 8-bit AdamW's quantization block), so every
// 8-bit block (one absmax scale) lies in one slice and a sharded step computes what the unsharded
// one does, bit for bit. Pure arithmetic, the same on every rank: no communication.
#pragma once
#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace sft::model {

// size + 1 positions in the concatenation of tensors of `numels` elements: rank r keeps
// [bounds[r], bounds[r + 1]). bounds[0] = 0, bounds[size] = the total; each inner bound is a
// tensor's start plus a multiple of `align` (so a slice may be empty when tensors are few and small).
inline std::vector<int64_t> shard_bounds(const std::vector<int64_t>& numels, int size, int64_t align) {
  int64_t total = 0;
  for (int64_t n : numels) total += n;
  std::vector<int64_t> b(size_t(size) + 1, total);
  b[0] = 0;
  for (int r = 1; r < size; r++) {
    const int64_t want = total / size * r + total % size * r / size;  // floor(total * r / size), no overflow
    int64_t start = 0;
    for (int64_t n : numels) {
      if (want < start + n) {
        b[size_t(r)] = start + (want - start) / align * align;
        break;
      }
      start += n;
    }
  }
  return b;
}

// The part [lo, hi) of a tensor at [start, start + n) of the concatenation that the slice
// [b0, b1) holds, in the tensor's own element offsets (empty: lo == hi).
inline std::pair<int64_t, int64_t> shard_part(int64_t start, int64_t n, int64_t b0, int64_t b1) {
  const int64_t lo = std::clamp<int64_t>(b0 - start, 0, n), hi = std::clamp<int64_t>(b1 - start, 0, n);
  return {lo, std::max(lo, hi)};
}

}  // namespace sft::model
