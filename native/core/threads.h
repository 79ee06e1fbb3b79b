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

// Tells the pool that no parallel work follows soon (an engine call has returned to JavaScript):
// its workers stop spinning and sleep, leaving the cores to the event loop and other processes.
void rest_threads();

// Calls fn(begin, end) on disjoint chunks covering [0, n). Blocks until all chunks are done.
// Chunks are at least `grain` long so tiny loops stay on the calling thread. There are at most
// threads x chunks_per_thread of them, claimed by whichever thread is free: more than one per
// thread balances a loop when a core is shared with other processes (the threads that run take
// the chunks of one that does not), where fn's results do not depend on where chunks begin.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn, int chunks_per_thread = 1);

}  // namespace sft
