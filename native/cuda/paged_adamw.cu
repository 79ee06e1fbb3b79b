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
    if (m_[s]) cudaFree(m_[s]);
    if (v_[s]) cudaFree(v_[s]);
    if (loaded_[s]) cudaEventDestroy(loaded_[s]);
    if (updated_[s]) cudaEventDestroy(updated_[s]);
  }
  if (stored_) cudaEventDestroy(stored_);
}

void AdamWPager::update(float* p, const float* g, float* m_host, float* v_host, int64_t n, double lr, double b1,
                        double b2, double eps, double weight_decay, int64_t t, double grad_scale, cudaStream_t stream) {
  if (n <= 0) return;
  const std::vector<Page> pages = plan_pages({n}, page_elems_);
  const size_t np = pages.size();
  // Which slot each page uses; the side stream's order per slot is load, (update), store, next load.
  std::vector<int> slot(np);
  for (size_t i = 0; i < np; i++) slot[i] = (next_slot_ + int(i)) & 1;
  // A slot may still be in use by the previous call's pages: the side stream waits for their update
  // before it loads (the store of that page was queued on the side stream earlier, so it comes first).
  auto load = [&](size_t i) {
    const Page& pg = pages[i];
    const int s = slot[i];
    SFT_CUDA_CHECK(cudaStreamWaitEvent(side_, updated_[s], 0));
    SFT_CUDA_CHECK(cudaMemcpyAsync(m_[s], m_host + pg.offset, size_t(pg.count) * sizeof(float), cudaMemcpyHostToDevice, side_));
    SFT_CUDA_CHECK(cudaMemcpyAsync(v_[s], v_host + pg.offset, size_t(pg.count) * sizeof(float), cudaMemcpyHostToDevice, side_));
    SFT_CUDA_CHECK(cudaEventRecord(loaded_[s], side_));
  };
  // The gradients (and the parameters) are written on `stream`: the side stream starts after them.
  SFT_CUDA_CHECK(cudaEventRecord(stored_, stream));
  SFT_CUDA_CHECK(cudaStreamWaitEvent(side_, stored_, 0));
  load(0);
  if (np > 1) load(1);
  for (size_t i = 0; i < np; i++) {
    const Page& pg = pages[i];
    const int s = slot[i];
    SFT_CUDA_CHECK(cudaStreamWaitEvent(stream, loaded_[s], 0));
    adamw_update(p + pg.offset, g + pg.offset, m_[s], v_[s], pg.count, lr, b1, b2, eps, weight_decay, t, grad_scale, stream);
    SFT_CUDA_CHECK(cudaEventRecord(updated_[s], stream));
    // Store page i, then bring page i+2 into the same slot (the side stream keeps that order).
    SFT_CUDA_CHECK(cudaStreamWaitEvent(side_, updated_[s], 0));
    SFT_CUDA_CHECK(cudaMemcpyAsync(m_host + pg.offset, m_[s], size_t(pg.count) * sizeof(float), cudaMemcpyDeviceToHost, side_));
    SFT_CUDA_CHECK(cudaMemcpyAsync(v_host + pg.offset, v_[s], size_t(pg.count) * sizeof(float), cudaMemcpyDeviceToHost, side_));
    if (i + 2 < np) load(i + 2);
  }
  next_slot_ = (next_slot_ + int(np)) & 1;
  // What `stream` queues next (a download of the moments, the next step's backward) follows the stores.
  SFT_CUDA_CHECK(cudaEventRecord(stored_, side_));
  SFT_CUDA_CHECK(cudaStreamWaitEvent(stream, stored_, 0));
}

}  // namespace sft::cuda
