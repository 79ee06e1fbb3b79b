#include "core/threads.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace sft {
namespace {

// Spin rounds (~20-40 us) a worker waits for the next job, and the caller for the last chunk,
// before sleeping on a condition variable: a training step runs thousands of short parallel loops
// back to back (each GEMM panel, each elementwise op), and a futex wake-up per loop cost ~5-10 % of
// the step on two cores. Bounded, so an idle pool sleeps and a busy machine loses little.
constexpr int kSpinRounds = 2000;
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

// Workers wait for `generation` to change (spinning, then on a condition variable); each then
// runs its own chunks of the current job. The caller runs chunk 0 itself.
class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop(); }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // A system that refuses a thread (address space, a pids limit) makes std::thread throw
  // std::system_error; escaping into Node-API it would abort the process. The threads started
  // are stopped again (the caller alone runs every job until the next resize) and the failure
  // becomes an error that says what to change.
  void resize(int n) {
    stop();
    quit_ = false;
    try {
      // A new worker starts from the current generation: jobs that ran before a resize are not its
      // own (starting from 0 it would run the stale job pointer of the last one).
      const uint64_t gen = generation_.load();
      for (int i = 1; i < n; i++) workers_.emplace_back([this, i, gen] { loop(i, gen); });
    } catch (const std::system_error& e) {
      const size_t started = workers_.size() + 1;
      stop();
      throw std::runtime_error("could not start " + std::to_string(n) + " CPU threads (" + std::to_string(started) +
                               " started: " + e.what() + "); set threads lower (0 = one per core)");
    }
  }

  void run(int chunks, const std::function<void(int)>& job) {
    if (chunks <= 1 || workers_.empty()) {
      for (int c = 0; c < chunks; c++) job(c);
      return;
    }
    // job_ and chunks_ are published by the generation's release store; no worker reads them
    // again once pending_ reaches 0, which the previous run waited for.
    job_ = &job;
    chunks_ = chunks;
    pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mu_);  // a worker between its check and its wait sees it
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    // The caller takes chunks 0, size, 2*size...; worker i takes i, i+size, ...
    for (int c = 0; c < chunks; c += size()) job(c);
    for (int i = 0; i < kSpinRounds && pending_.load(std::memory_order_acquire) != 0; i++) cpu_relax();
    if (pending_.load(std::memory_order_acquire) != 0) {
      std::unique_lock<std::mutex> lock(mu_);
      done_cv_.wait(lock, [this] { return pending_.load(std::memory_order_acquire) == 0; });
    }
    job_ = nullptr;
  }

 private:
  void loop(int id, uint64_t seen) {
    for (;;) {
      for (int i = 0; i < kSpinRounds && generation_.load(std::memory_order_acquire) == seen && !quit_.load(); i++) cpu_relax();
      if (generation_.load(std::memory_order_acquire) == seen && !quit_.load()) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return quit_.load() || generation_.load(std::memory_order_acquire) != seen; });
      }
      if (quit_.load()) return;
      seen = generation_.load(std::memory_order_acquire);
      const std::function<void(int)>* job = job_;
      const int chunks = chunks_, stride = size();
      for (int c = id; c < chunks; c += stride) (*job)(c);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mu_);  // the caller is either before its check or waiting
        done_cv_.notify_one();
      }
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int)>* job_ = nullptr;
  int chunks_ = 0;
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> quit_{false};
};

int hardware_threads() { return std::max(1u, std::thread::hardware_concurrency()); }

Pool& pool() {
  static Pool p(hardware_threads());
  return p;
}

std::mutex run_mu;  // one parallel job at a time (async workers may call from several threads)
thread_local bool in_parallel = false;  // a parallel_for inside a chunk runs serially (no deadlock)

}  // namespace

void set_num_threads(int n) {
  std::lock_guard<std::mutex> lock(run_mu);
  pool().resize(n <= 0 ? hardware_threads() : n);
}

int num_threads() { return pool().size(); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  int64_t threads = num_threads();
  int64_t chunks = std::min<int64_t>(threads, (n + std::max<int64_t>(grain, 1) - 1) / std::max<int64_t>(grain, 1));
  if (chunks <= 1 || in_parallel) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> lock(run_mu);
  int64_t per = (n + chunks - 1) / chunks;
  pool().run(static_cast<int>(chunks), [&](int c) {
    int64_t b = c * per, e = std::min(n, b + per);
    in_parallel = true;
    if (b < e) fn(b, e);
    in_parallel = false;
  });
}

}  // namespace sft
