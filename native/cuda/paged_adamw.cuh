// Paged AdamW (optim paged_adamw_32bit, paged_adamw_8bit): the moments live in pinned host memory
// and are updated a page at a time through two device page buffers. Explicit asynchronous copies on
// a side stream, not managed memory (oversubscribed managed memory can hang a GPU): while the
// compute stream updates page i from one buffer, the side stream brings page i+1 into the other and
// writes page i-1 back. The update is adamw_update's (or adamw_update_8bit's) kernel on each page,
// so p and the moments come out bit-identical to the unpaged optimizer's. backend/paging.h plans
// the pages; an 8-bit page is whole 256-element blocks (codes and their scales move together).
// NOT YET RUN ON A GPU: checked under the CPU emulator (test/cuda/test_paged.cu).
#pragma once
#include <cstdint>

#include "cuda/types.h"

namespace sft::cuda {

// Device page buffers, the side stream and the events that order the two streams. One per model;
// slots alternate across calls, so a step's tensors form one pipeline.
class AdamWPager {
 public:
  explicit AdamWPager(int64_t page_elems);  // a multiple of 256 when 8-bit states are paged
  ~AdamWPager();
  AdamWPager(const AdamWPager&) = delete;
  AdamWPager& operator=(const AdamWPager&) = delete;

  int64_t page_elems() const { return page_elems_; }
  // Device bytes the pager holds: two pages of fp32 m and v, and with 8-bit states two pages of
  // their codes and block scales too.
  static size_t device_bytes(int64_t page_elems, bool eight_bit) {
    const size_t f32 = size_t(4) * size_t(page_elems) * sizeof(float);
    return f32 + (eight_bit ? size_t(2) * (size_t(2) * size_t(page_elems) + size_t(2) * size_t(page_elems / 256) * sizeof(float)) : 0);
  }

  // adamw_update over p, g (device, n elements) with m_host, v_host (pinned host, n elements):
  // queued on `stream` and the side stream; everything queued on `stream` afterwards sees the
  // moments written back (the host may read them once `stream` is synchronised).
  void update(float* p, const float* g, float* m_host, float* v_host, int64_t n, double lr, double b1, double b2,
              double eps, double weight_decay, int64_t t, double grad_scale, cudaStream_t stream);
  // adamw_update_8bit the same way: m8/v8 (n codes) and m_absmax/v_absmax (ceil(n/256) scales) in
  // pinned host memory; smap/umap the device maps.
  void update_8bit(float* p, const float* g, uint8_t* m8_host, float* m_absmax_host, uint8_t* v8_host,
                   float* v_absmax_host, const float* smap, const float* umap, int64_t n, double lr, double b1,
                   double b2, double eps, double weight_decay, int64_t t, double grad_scale, cudaStream_t stream);

 private:
  // One array that pages: host base, the two device slots, bytes per `per` elements.
  struct Array {
    char* host;
    char* slot[2];
    size_t unit;
    int64_t per;
  };
  template <typename F>
  void run(Array* arrays, int count, int64_t n, F update_page, cudaStream_t stream);
  void ensure_8bit();

  int64_t page_elems_;
  float* m_[2] = {nullptr, nullptr};
  float* v_[2] = {nullptr, nullptr};
  uint8_t* m8_[2] = {nullptr, nullptr};  // 8-bit slots, taken on first use
  uint8_t* v8_[2] = {nullptr, nullptr};
  float* ma_[2] = {nullptr, nullptr};
  float* va_[2] = {nullptr, nullptr};
  cudaStream_t side_ = nullptr;
  cudaEvent_t loaded_[2] = {nullptr, nullptr};   // the page is in the slot (side -> compute)
  cudaEvent_t updated_[2] = {nullptr, nullptr};  // the slot's page is updated (compute -> side)
  cudaEvent_t stored_ = nullptr;                 // the last page is back on the host (side -> compute)
  int next_slot_ = 0;
};

}  // namespace sft::cuda
