// bitsandbytes' 8-bit dynamic maps on the device (include from .cu files only): the nearest entry
// of a sorted 256-value map, as cpu::map_index picks it. NF4's double quantization (quant.cu) and
// 8-bit AdamW's moments (adamw.cu) both round through it.
#pragma once
#include "cuda/types.h"

namespace sft::cuda {

// cpu::map_index over the sorted 256-entry map: lower_bound, then the nearer neighbour (ties low).
__device__ __forceinline__ uint8_t map_index_dev(const float* map, float v) {
  int lo = 0, hi = 256;  // first index with map[i] >= v
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (map[mid] < v) lo = mid + 1;
    else hi = mid;
  }
  if (lo == 0) return 0;
  if (lo == 256) return 255;
  return uint8_t(__fadd_rn(v, -map[lo - 1]) <= __fadd_rn(map[lo], -v) ? lo - 1 : lo);
}

}  // namespace sft::cuda
