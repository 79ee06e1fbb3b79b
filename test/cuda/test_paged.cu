// Paged AdamW (cuda/paged_adamw.cuh), 32-bit and 8-bit, against the unpaged kernels, bit for bit, and the page plan
// (backend/paging.h) on its own. Run by test_kernels.cu's main (--only paged).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../native/check.h"
#include "backend/paging.h"
#include "cpu/quant.h"
#include "cuda/adamw.cuh"
#include "cuda/paged_adamw.cuh"
#include "cuda_test_util.cuh"

namespace {

namespace cu = sft::cuda;

// The plan: every element of every tensor in exactly one page, in order, pages full but a tensor's
// last, none spanning tensors, empty tensors without pages; a bad page size refused.
void check_page_plan() {
  const std::vector<int64_t> sizes = {10, 0, 7, 1, 24};
  const std::vector<sft::Page> got = sft::plan_pages(sizes, 8);
  const std::vector<sft::Page> want = {{0, 0, 8}, {0, 8, 2}, {2, 0, 7}, {3, 0, 1}, {4, 0, 8}, {4, 8, 8}, {4, 16, 8}};
  bool same = got.size() == want.size();
  for (size_t i = 0; same && i < got.size(); i++)
    same = got[i].tensor == want[i].tensor && got[i].offset == want[i].offset && got[i].count == want[i].count;
  report("page plan: sizes {10, 0, 7, 1, 24} in pages of 8 (by hand)", same ? 0.0 : 1.0, 0.5);
  int refused = 0;
  for (auto [page, align] : std::vector<std::pair<int64_t, int64_t>>{{0, 1}, {300, 256}, {100, 256}, {8, 0}}) {
    try {
      sft::plan_pages(sizes, page, align);
    } catch (const std::invalid_argument&) {
      refused++;
    }
  }
  report("page plan: page sizes that are no positive multiple of the alignment are refused", refused == 4 ? 0.0 : 1.0, 0.5);
  // Coverage on odd sizes: each element once.
  std::mt19937_64 r(5);
  bool covered = true;
  for (int trial = 0; trial < 20; trial++) {
    std::vector<int64_t> s(1 + r() % 5);
    for (auto& x : s) x = int64_t(r() % 3000);
    const int64_t page = 256 * int64_t(1 + r() % 4);
    std::vector<std::vector<int>> seen(s.size());
    for (size_t t = 0; t < s.size(); t++) seen[t].assign(size_t(s[t]), 0);
    for (const auto& pg : sft::plan_pages(s, page, 256)) {
      covered = covered && pg.count >= 1 && pg.count <= page && pg.offset % page == 0;
      for (int64_t i = 0; i < pg.count; i++) seen[size_t(pg.tensor)][size_t(pg.offset + i)]++;
    }
    for (auto& v : seen)
      for (int c : v) covered = covered && c == 1;
  }
  report("page plan: 20 random layouts, every element in exactly one aligned page", covered ? 0.0 : 1.0, 0.5);
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Three tensors (one smaller than a page, two that no page size divides) through 4 steps: paged and
// unpaged give the same parameters and moments bit for bit, at page sizes 1000, 777 and 64.
void check_paged_adamw() {
  std::mt19937_64 r(11);
  const std::vector<int64_t> sizes = {5003, 17, 2311};
  for (int64_t page : {1000, 777, 64}) {
    cu::AdamWPager pager(page);
    bool all = true;
    std::vector<Dev<float>> p_ref, p_pag, m_ref, v_ref, grads;
    std::vector<float*> m_host, v_host;
    for (int64_t n : sizes) {
      const std::vector<float> p0 = randf(n, r);
      p_ref.emplace_back(p0), p_pag.emplace_back(p0);
      m_ref.emplace_back(std::vector<float>(size_t(n), 0.f)), v_ref.emplace_back(std::vector<float>(size_t(n), 0.f));
      grads.emplace_back(size_t(n));
      float *mh = nullptr, *vh = nullptr;
      SFT_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&mh), size_t(n) * sizeof(float)));
      SFT_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&vh), size_t(n) * sizeof(float)));
      std::memset(mh, 0, size_t(n) * sizeof(float)), std::memset(vh, 0, size_t(n) * sizeof(float));
      m_host.push_back(mh), v_host.push_back(vh);
    }
    cudaStream_t s;
    SFT_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    for (int64_t t = 1; t <= 4; t++) {
      for (size_t k = 0; k < sizes.size(); k++) grads[k].upload(randf(sizes[k], r, 0.1));
      for (size_t k = 0; k < sizes.size(); k++) {
        const double wd = k == 1 ? 0.0 : 0.01;
        cu::adamw_update(p_ref[k].p, grads[k].p, m_ref[k].p, v_ref[k].p, sizes[k], 1e-3, 0.9, 0.999, 1e-8, wd, t, 0.7, s);
        pager.update(p_pag[k].p, grads[k].p, m_host[k], v_host[k], sizes[k], 1e-3, 0.9, 0.999, 1e-8, wd, t, 0.7, s);
      }
    }
    SFT_CUDA_CHECK(cudaStreamSynchronize(s));
    for (size_t k = 0; k < sizes.size(); k++) {
      const size_t n = size_t(sizes[k]);
      all = all && same_bits(p_pag[k].get(), p_ref[k].get());
      all = all && same_bits(std::vector<float>(m_host[k], m_host[k] + n), m_ref[k].get());
      all = all && same_bits(std::vector<float>(v_host[k], v_host[k] + n), v_ref[k].get());
      cudaFreeHost(m_host[k]), cudaFreeHost(v_host[k]);
    }
    SFT_CUDA_CHECK(cudaStreamDestroy(s));
    report("cuda paged AdamW, pages of " + std::to_string(page) + ": params and moments = unpaged, bit for bit (4 steps, 3 tensors)",
           all ? 0.0 : 1.0, 0.5);
  }
}

// 8-bit states through the pager (pages of 512 and 768: whole 256-blocks, and a tensor's last
// page partial) against the unpaged 8-bit kernel: parameters, codes and block scales bit for bit.
void check_paged_adamw_8bit() {
  std::mt19937_64 r(13);
  const std::vector<float> smap0 = sft::cpu::dynamic_map_signed(), umap0 = sft::cpu::dynamic_map_unsigned();
  Dev<float> smap(smap0), umap(umap0);
  const std::vector<int64_t> sizes = {1900, 37};
  for (int64_t page : {512, 768}) {
    cu::AdamWPager pager(page);
    bool all = true;
    cudaStream_t s;
    SFT_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    for (int64_t n : sizes) {
      const int64_t blocks = (n + 255) / 256;
      const std::vector<float> p0 = randf(n, r);
      Dev<float> p_ref(p0), p_pag(p0), g(static_cast<size_t>(n));
      Dev<uint8_t> m8(std::vector<uint8_t>(size_t(n), sft::cpu::map_index(smap0, 0.f))), v8(std::vector<uint8_t>(size_t(n), 0));
      Dev<float> ma(std::vector<float>(size_t(blocks), 0.f)), va(std::vector<float>(size_t(blocks), 0.f));
      uint8_t *hm8 = nullptr, *hv8 = nullptr;
      float *hma = nullptr, *hva = nullptr;
      SFT_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&hm8), size_t(n)));
      SFT_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&hv8), size_t(n)));
      SFT_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&hma), size_t(blocks) * 4));
      SFT_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&hva), size_t(blocks) * 4));
      std::memset(hm8, sft::cpu::map_index(smap0, 0.f), size_t(n)), std::memset(hv8, 0, size_t(n));
      std::memset(hma, 0, size_t(blocks) * 4), std::memset(hva, 0, size_t(blocks) * 4);
      for (int64_t t = 1; t <= 3; t++) {
        g.upload(randf(n, r, 0.1));
        cu::adamw_update_8bit(p_ref.p, g.p, m8.p, ma.p, v8.p, va.p, smap.p, umap.p, n, 1e-2, 0.9, 0.999, 1e-8, 0.01, t, 0.5, s);
        pager.update_8bit(p_pag.p, g.p, hm8, hma, hv8, hva, smap.p, umap.p, n, 1e-2, 0.9, 0.999, 1e-8, 0.01, t, 0.5, s);
      }
      SFT_CUDA_CHECK(cudaStreamSynchronize(s));
      all = all && same_bits(p_pag.get(), p_ref.get());
      all = all && m8.get() == std::vector<uint8_t>(hm8, hm8 + n) && v8.get() == std::vector<uint8_t>(hv8, hv8 + n);
      all = all && same_bits(ma.get(), std::vector<float>(hma, hma + blocks)) && same_bits(va.get(), std::vector<float>(hva, hva + blocks));
      cudaFreeHost(hm8), cudaFreeHost(hv8), cudaFreeHost(hma), cudaFreeHost(hva);
    }
    SFT_CUDA_CHECK(cudaStreamDestroy(s));
    report("cuda paged 8-bit AdamW, pages of " + std::to_string(page) + ": params, codes and scales = unpaged, bit for bit (3 steps, 2 tensors)",
           all ? 0.0 : 1.0, 0.5);
  }
}

}  // namespace

void run_paged_checks() {
  check_page_plan();
  check_paged_adamw();
  check_paged_adamw_8bit();
}
