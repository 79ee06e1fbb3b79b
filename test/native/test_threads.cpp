// The thread pool: every index exactly once, however the chunks are split; chunks go to whichever
// thread is free (a thread held up by the OS, or by a long chunk, delays no one else's); the pool
// wakes from rest.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "check.h"
#include "core/threads.h"

namespace {

void ok(bool pass, const char* what) {
  if (!pass) failures++;
  std::printf("%s threads: %s\n", pass ? "ok  " : "FAIL", what);
}

bool covers_once(int64_t n, int64_t grain, int per_thread) {
  std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
  sft::parallel_for(n, grain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) hits[size_t(i)]++;
  }, per_thread);
  for (auto& h : hits)
    if (h.load() != 1) return false;
  return true;
}

}  // namespace

void check_threads() {
  sft::set_num_threads(2);
  bool all = true;
  for (int64_t n : {1, 2, 7, 64, 1000})
    for (int64_t grain : {1, 3, 100})
      for (int per : {1, 4, 100000}) all = all && covers_once(n, grain, per);
  ok(all, "every index once, for any grain and chunks per thread");

  // The first chunk to start waits until all the others are done: only a pool whose threads take
  // chunks as they come (not a fixed share each) finishes them, the other thread running all 7.
  std::atomic<int> started{0}, done{0};
  std::mutex mu;
  std::set<std::thread::id> others;
  bool waited_out = true;
  sft::parallel_for(8, 1, [&](int64_t b, int64_t e) {
    if (started.fetch_add(1) == 0) {
      const auto t0 = std::chrono::steady_clock::now();
      while (done.load() < 7) {
        if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(5)) return void(waited_out = false);
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      others.insert(std::this_thread::get_id());
    }
    done.fetch_add(int(e - b));
  }, 4);
  ok(waited_out && done.load() == 7 && others.size() == 1, "a held-up thread's chunks are taken by the other one");

  // After rest (workers asleep) the next job still runs on both threads, many times over.
  bool woke = true;
  for (int round = 0; round < 200 && woke; round++) {
    sft::rest_threads();
    if (round % 50 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    woke = covers_once(64, 1, 1);
  }
  ok(woke, "jobs after rest_threads run to completion");
  sft::set_num_threads(0);
}
