// Paged AdamW (optim paged_adamw_32bit): fp32 moments in pinned host memory, updated a page at a
// time through two device page buffers. Explicit asynchronous copies on a side stream, not managed
// memory (oversubscribed managed memory can hang a GPU): while the compute stream updates page i
// from one buffer, the side stream brings page i+1 into the other and writes page i-1 back.
// The update is adamw_update's kernel on each page, so p, m and v come out bit-identical to the
// unpaged optimizer's. backend/paging.h plans the pages.
// NOT YET RUN ON A GPU: checked under the CPU emulator (test/cuda/test_paged.cu).
#pragma once
#include <cstdint>

#include "cuda/types.h"

namespace sft::cuda {

// Device page buffers, the side stream and the events that order the two streams. One per model;
// slots alternate across calls, so a step's tensors form one pipeline.
class AdamWPager {
 public:
  explicit AdamWPager(int64_t page_elems);
  ~AdamWPager();
  AdamWPager(const AdamWPager&) = delete;
  AdamWPager& operator=(const AdamWPager&) = delete;

  int64_t page_elems() const { return page_elems_; }
  // Device bytes the pager holds: two pages of m and v.
  static size_t device_bytes(int64_t page_elems) { return size_t(4) * size_t(page_elems) * sizeof(float); }

  // adamw_update over p, g (device, n elements) with m_host, v_host (pinned host, n elements):
  // queued on `stream` and the side stream; everything queued on `stream` afterwards sees the
  // moments written back (the host may read them once `stream` is synchronised).
  void update(float* p, const float* g, float* m_host, float* v_host, int64_t n, double lr, double b1, double b2,
              double eps, double weight_decay, int64_t t, double grad_scale, cudaStream_t stream);

 private:
  int64_t page_elems_;
  float* m_[2] = {nullptr, nullptr};
  float* v_[2] = {nullptr, nullptr};
  cudaStream_t side_ = nullptr;
  cudaEvent_t loaded_[2] = {nullptr, nullptr};   // the page is in the slot (side -> compute)
  cudaEvent_t updated_[2] = {nullptr, nullptr};  // the slot's page is updated (compute -> side)
  cudaEvent_t stored_ = nullptr;                 // the last page is back on the host (side -> compute)
  int next_slot_ = 0;
};

}  // namespace sft::cuda
