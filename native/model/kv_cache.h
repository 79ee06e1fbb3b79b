// The KV cache of generation: per sequence slot and layer, `capacity` positions of `width` keys
// (and values), one block for all of them: [slot][layer][position][width]. Each slot has its own
// length, so a batch of sequences can later decode together; feed() uses slot 0.
#pragma once
#include <algorithm>
#include <vector>

#include "backend/plan.h"

namespace sft::model {

template <class Bk>
struct KvCache {
  using T = typename Bk::T;
  int64_t slots = 0, layers = 0, capacity = 0, width = 0;
  T* k = nullptr;
  T* v = nullptr;
  std::vector<int64_t> len;  // tokens cached per slot

  T* keys(int64_t slot, int64_t layer) const { return k + (slot * layers + layer) * capacity * width; }
  T* values(int64_t slot, int64_t layer) const { return v + (slot * layers + layer) * capacity * width; }

  void lay_out(Carver& c) {
    c.take(k, slots * layers * capacity * width, "keys");
    c.take(v, slots * layers * capacity * width, "values");
  }
};

// Grows `cache` to hold `positions` per slot (geometrically, at least 256), keeping what it holds.
// Returns false when it already had room. A meta model only measures.
template <class Bk>
bool grow_kv_cache(Bk& bk, Block<Bk>& blk, KvCache<Bk>& cache, int64_t slots, int64_t layers, int64_t width, int64_t positions,
                   KindPlan& plan, bool meta, int64_t& allocations) {
  if (cache.slots >= slots && cache.capacity >= positions && cache.layers == layers && cache.width == width) return false;
  KvCache<Bk> next = cache;
  next.slots = std::max(slots, cache.slots);
  next.layers = layers, next.width = width;
  // Positions grow geometrically (decoding does not regrow every token); a new slot alone keeps them
  // (doubling them per slot made 8 serving slots hold 256 x 2^8 positions each).
  next.capacity = positions > cache.capacity ? std::max(positions, std::max<int64_t>(256, 2 * cache.capacity)) : cache.capacity;
  next.len.resize(size_t(next.slots), 0);
  Carver measure(MemKind::KvCache);
  next.lay_out(measure);
  plan = measure.plan();
  if (meta) {
    cache = next;
    return true;
  }
  Block<Bk> fresh(&bk, MemKind::KvCache, measure.bytes());
  allocations++;
  Carver assign(MemKind::KvCache, fresh.data());
  next.lay_out(assign);
  using T = typename Bk::T;
  if (cache.k && cache.layers == layers && cache.width == width)
    for (int64_t s = 0; s < cache.slots; s++)
      for (int64_t l = 0; l < layers; l++) {
        const size_t bytes = size_t(cache.len[size_t(s)] * width) * sizeof(T);
        bk.copy(next.keys(s, l), cache.keys(s, l), bytes);
        bk.copy(next.values(s, l), cache.values(s, l), bytes);
      }
  cache = next;
  blk = std::move(fresh);
  return true;
}

}  // namespace sft::model
