// Paged optimizer states (optim paged_adamw_32bit): the moments live in pinned host memory and pass
// through the device in pages of a fixed size, two page buffers on the device, so the optimizer's
// device memory is two pages whatever the model. This is the host-side plan of those pages; the
// copies and the update are the backend's (cuda/paged_adamw.cuh).
//
// A page never spans two tensors (each tensor's parameters, gradients and moments are separate
// arrays), and every page but a tensor's last holds exactly `page_elems` elements, a multiple of
// `align` (8-bit states would need whole 256-element blocks per page).
#pragma once
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace sft {

struct Page {
  int tensor;      // index into the sizes the plan was made from
  int64_t offset;  // first element of the page within that tensor
  int64_t count;   // elements in the page (1..page_elems)
};

inline std::vector<Page> plan_pages(const std::vector<int64_t>& sizes, int64_t page_elems, int64_t align = 1) {
  if (align < 1 || page_elems < align || page_elems % align != 0)
    throw std::invalid_argument("plan_pages: the page size must be a positive multiple of the alignment");
  std::vector<Page> pages;
  for (size_t t = 0; t < sizes.size(); t++)
    for (int64_t off = 0; off < sizes[t]; off += page_elems)
      pages.push_back({int(t), off, sizes[t] - off < page_elems ? sizes[t] - off : page_elems});
  return pages;
}

}  // namespace sft
