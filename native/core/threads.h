// A tiny persistent thread pool: parallel_for splits [0, n) into contiguous chunks, one per
// worker. The CPU backend runs every heavy loop through it so both cores of a small machine work.
#pragma once
#include <cstdint>
#include <functional>

namespace sft {

// Set the number of worker threads (including the caller). 0 = all hardware threads. Throws
// std::runtime_error when the system refuses the threads (the pool is then the caller alone).
void set_num_threads(int n);
int num_threads();

// Calls fn(begin, end) on disjoint chunks covering [0, n). Blocks until all chunks are done.
// Chunks are at least `grain` long so tiny loops stay on the calling thread.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace sft
