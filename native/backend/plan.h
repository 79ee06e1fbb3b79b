// The memory plan, llm.c's way: every buffer a run needs is listed once, by name and size, in a
// layout function; the same function measures (first pass: sizes and offsets, no memory) and then
// hands out pointers into ONE allocation per kind (second pass). The plan that `sft train
// --dry-run` prints is therefore the plan the run allocates, byte for byte.
//
//   Carver c(MemKind::Activations);            // measure
//   lay_out(c);                                //   c.take(acts.x, N * H, "x") ... (each line one buffer)
//   Block blk(bk, kind, c.bytes());            // one allocation
//   Carver a(kind, blk.data()); lay_out(a);    // the same calls now set the pointers
#pragma once
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"

namespace sft {

constexpr size_t kPlanAlign = 256;  // cudaMalloc's alignment; also a multiple of every CPU vector width

inline size_t align_up(size_t n, size_t a = kPlanAlign) { return (n + a - 1) / a * a; }

struct PlanEntry {
  std::string name;
  size_t bytes;
};

// What one kind holds: total bytes (aligned entries) and the entries themselves.
struct KindPlan {
  size_t bytes = 0;
  std::vector<PlanEntry> entries;
};

// Bytes per kind of a model on a device: what is allocated now (or, for a plan computed without
// memory, what would be).
struct MemoryPlan {
  std::array<KindPlan, size_t(MemKind::Count)> kinds;
  KindPlan& operator[](MemKind k) { return kinds[size_t(k)]; }
  const KindPlan& operator[](MemKind k) const { return kinds[size_t(k)]; }
  size_t total() const {
    size_t t = 0;
    for (const auto& k : kinds) t += k.bytes;
    return t;
  }
  MemKind largest() const {
    size_t best = 0;
    for (size_t i = 1; i < kinds.size(); i++)
      if (kinds[i].bytes > kinds[best].bytes) best = i;
    return MemKind(best);
  }
};

// Carves named buffers out of one block. Built with a base it ASSIGNS each pointer (second pass);
// without one it only MEASURES, leaving the pointers as they are and remembering them, so that a
// relayout can copy what the old block held into the new one (adapters added after loading).
class Carver {
 public:
  explicit Carver(MemKind kind, void* base = nullptr) : kind_(kind), base_(static_cast<char*>(base)) {}

  template <typename E>
  void take(E*& ptr, int64_t count, const std::string& name) {
    const size_t bytes = size_t(count > 0 ? count : 0) * sizeof(E);
    offset_ = align_up(offset_);
    if (base_) {
      ptr = bytes ? reinterpret_cast<E*>(base_ + offset_) : nullptr;
    } else {
      old_.push_back({ptr, bytes});
    }
    if (bytes) entries_.push_back({name, bytes});
    offset_ += bytes;
  }

  MemKind kind() const { return kind_; }
  size_t bytes() const { return align_up(offset_); }
  const std::vector<PlanEntry>& entries() const { return entries_; }
  KindPlan plan() const { return {bytes(), entries_}; }
  // Measure pass only: each take()'s pointer as it was, with the size it is given now.
  struct Slot {
    const void* old;
    size_t bytes;
  };
  const std::vector<Slot>& old_slots() const { return old_; }

 private:
  MemKind kind_;
  char* base_;
  size_t offset_ = 0;
  std::vector<PlanEntry> entries_;
  std::vector<Slot> old_;
};

// Whether every buffer of `need` fits in the same-named buffer of `have`.
inline bool plan_covers(const KindPlan& have, const KindPlan& need) {
  for (const auto& e : need.entries) {
    auto it = std::find_if(have.entries.begin(), have.entries.end(), [&](const PlanEntry& p) { return p.name == e.name; });
    if (it == have.entries.end() || it->bytes < e.bytes) return false;
  }
  return true;
}

// One allocation of one kind on backend Bk, released when destroyed (moves, never copies).
template <class Bk>
class Block {
 public:
  Block() = default;
  Block(Bk* bk, MemKind kind, size_t bytes) : bk_(bk), kind_(kind), bytes_(bytes) {
    if (bytes) ptr_ = bk->alloc(kind, bytes);
  }
  Block(Block&& o) noexcept { *this = std::move(o); }
  Block& operator=(Block&& o) noexcept {
    if (this != &o) {
      reset();
      bk_ = o.bk_, kind_ = o.kind_, bytes_ = o.bytes_, ptr_ = o.ptr_;
      o.ptr_ = nullptr, o.bytes_ = 0;
    }
    return *this;
  }
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;
  ~Block() { reset(); }
  void reset() {
    if (ptr_) bk_->release(ptr_);
    ptr_ = nullptr, bytes_ = 0;
  }
  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  Bk* bk_ = nullptr;
  MemKind kind_ = MemKind::Weights;
  size_t bytes_ = 0;
  void* ptr_ = nullptr;
};

}  // namespace sft
