// Paged AdamW: the double-buffered page pipeline (see paged_adamw.cuh).
#include "cuda/paged_adamw.cuh"
#include "cuda/adamw.cuh"
#include "cuda/common.cuh"
#include "backend/paging.h"

#include <stdexcept>
#include <vector>

namespace sft::cuda {

AdamWPager::AdamWPager(int64_t page_elems) : page_elems_(page_elems) {
  if (page_elems <= 0) throw std::invalid_argument("AdamWPager: the page size must be positive");
  for (int s = 0; s < 2; s++) {
    SFT_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&m_[s]), size_t(page_elems) * sizeof(float)));
    SFT_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&v_[s]), size_t(page_elems) * sizeof(float)));
    SFT_CUDA_CHECK(cudaEventCreateWithFlags(&loaded_[s], cudaEventDisableTiming));
    SFT_CUDA_CHECK(cudaEventCreateWithFlags(&updated_[s], cudaEventDisableTiming));
  }
  SFT_CUDA_CHECK(cudaEventCreateWithFlags(&stored_, cudaEventDisableTiming));
  SFT_CUDA_CHECK(cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking));
}

AdamWPager::~AdamWPager() {
  if (side_) cudaStreamSynchronize(side_), cudaStreamDestroy(side_);
  for (int s = 0; s < 2; s++) {
    for (void* b : {static_cast<void*>(m_[s]), static_cast<void*>(v_[s]), static_cast<void*>(m8_[s]),
                    static_cast<void*>(v8_[s]), static_cast<void*>(ma_[s]), static_cast<void*>(va_[s])})
      if (b) cudaFree(b);
    if (loaded_[s]) cudaEventDestroy(loaded_[s]);
    if (updated_[s]) cudaEventDestroy(updated_[s]);
  }
  if (stored_) cudaEventDestroy(stored_);
}

void AdamWPager::ensure_8bit() {
  if (m8_[0]) return;
  if (page_elems_ % 256 != 0) throw std::invalid_argument("AdamWPager: 8-bit pages must be whole 256-element blocks");
  for (int s = 0; s < 2; s++) {
    SFT_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&m8_[s]), size_t(page_elems_)));
    SFT_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&v8_[s]), size_t(page_elems_)));
    SFT_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ma_[s]), size_t(page_elems_ / 256) * sizeof(float)));
    SFT_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&va_[s]), size_t(page_elems_ / 256) * sizeof(float)));
  }
}

// The pipeline over the pages of one tensor of n elements: for each array, page i's bytes are
// [offset / per * unit, ceil((offset + count) / per) * unit) of its host copy.
template <typename F>
void AdamWPager::run(Array* arrays, int count, int64_t n, F update_page, cudaStream_t stream) {
  if (n <= 0) return;
  const std::vector<Page> pages = plan_pages({n}, page_elems_);
  const size_t np = pages.size();
  auto span = [&](const Array& a, const Page& pg, size_t* off, size_t* bytes) {
    *off = size_t(pg.offset / a.per) * a.unit;
    *bytes = size_t((pg.count + a.per - 1) / a.per) * a.unit;
  };
  // Which slot each page uses; the side stream's order per slot is load, (update), store, next load.
  std::vector<int> slot(np);
  for (size_t i = 0; i < np; i++) slot[i] = (next_slot_ + int(i)) & 1;
  // A slot may still be in use by the previous call's pages: the side stream waits for their update
  // before it loads (the store of that page was queued on the side stream earlier, so it comes first).
  auto load = [&](size_t i) {
    const int s = slot[i];
    SFT_CUDA_CHECK(cudaStreamWaitEvent(side_, updated_[s], 0));
    for (int k = 0; k < count; k++) {
      size_t off, bytes;
      span(arrays[k], pages[i], &off, &bytes);
      SFT_CUDA_CHECK(cudaMemcpyAsync(arrays[k].slot[s], arrays[k].host + off, bytes, cudaMemcpyHostToDevice, side_));
    }
    SFT_CUDA_CHECK(cudaEventRecord(loaded_[s], side_));
  };
  // The gradients (and the parameters) are written on `stream`: the side stream starts after them.
  SFT_CUDA_CHECK(cudaEventRecord(stored_, stream));
  SFT_CUDA_CHECK(cudaStreamWaitEvent(side_, stored_, 0));
  load(0);
  if (np > 1) load(1);
  for (size_t i = 0; i < np; i++) {
    const int s = slot[i];
    SFT_CUDA_CHECK(cudaStreamWaitEvent(stream, loaded_[s], 0));
    update_page(pages[i], s);
    SFT_CUDA_CHECK(cudaEventRecord(updated_[s], stream));
    // Store page i, then bring page i+2 into the same slot (the side stream keeps that order).
    SFT_CUDA_CHECK(cudaStreamWaitEvent(side_, updated_[s], 0));
    for (int k = 0; k < count; k++) {
      size_t off, bytes;
      span(arrays[k], pages[i], &off, &bytes);
      SFT_CUDA_CHECK(cudaMemcpyAsync(arrays[k].host + off, arrays[k].slot[s], bytes, cudaMemcpyDeviceToHost, side_));
    }
    if (i + 2 < np) load(i + 2);
  }
  next_slot_ = (next_slot_ + int(np)) & 1;
  // What `stream` queues next (a download of the moments, the next step's backward) follows the stores.
  SFT_CUDA_CHECK(cudaEventRecord(stored_, side_));
  SFT_CUDA_CHECK(cudaStreamWaitEvent(stream, stored_, 0));
}

void AdamWPager::update(float* p, const float* g, float* m_host, float* v_host, int64_t n, double lr, double b1,
                        double b2, double eps, double weight_decay, int64_t t, double grad_scale, cudaStream_t stream) {
  Array a[2] = {{reinterpret_cast<char*>(m_host), {reinterpret_cast<char*>(m_[0]), reinterpret_cast<char*>(m_[1])}, 4, 1},
                {reinterpret_cast<char*>(v_host), {reinterpret_cast<char*>(v_[0]), reinterpret_cast<char*>(v_[1])}, 4, 1}};
  run(a, 2, n, [&](const Page& pg, int s) {
    adamw_update(p + pg.offset, g + pg.offset, m_[s], v_[s], pg.count, lr, b1, b2, eps, weight_decay, t, grad_scale, stream);
  }, stream);
}

void AdamWPager::update_8bit(float* p, const float* g, uint8_t* m8_host, float* m_absmax_host, uint8_t* v8_host,
                             float* v_absmax_host, const float* smap, const float* umap, int64_t n, double lr, double b1,
                             double b2, double eps, double weight_decay, int64_t t, double grad_scale,
                             cudaStream_t stream) {
  ensure_8bit();
  auto c = [](void* x) { return static_cast<char*>(x); };
  Array a[4] = {{c(m8_host), {c(m8_[0]), c(m8_[1])}, 1, 1},
                {c(v8_host), {c(v8_[0]), c(v8_[1])}, 1, 1},
                {c(m_absmax_host), {c(ma_[0]), c(ma_[1])}, 4, 256},
                {c(v_absmax_host), {c(va_[0]), c(va_[1])}, 4, 256}};
  run(a, 4, n, [&](const Page& pg, int s) {
    adamw_update_8bit(p + pg.offset, g + pg.offset, m8_[s], ma_[s], v8_[s], va_[s], smap, umap, pg.count, lr, b1, b2, eps,
                      weight_decay, t, grad_scale, stream);
  }, stream);
}

}  // namespace sft::cuda
