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

// Workers sleep on a condition variable and wake when `generation` changes; each then runs
// its own chunk of the current job. The caller runs chunk 0 itself.
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
      // A new worker must not take the last finished job for a new one: it starts from the
      // current generation (stable here: resize and run both hold run_mu).
      for (int i = 1; i < n; i++) workers_.emplace_back([this, i, g = generation_] { loop(i, g); });
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
    std::unique_lock<std::mutex> lock(mu_);
    job_ = &job;
    chunks_ = chunks;
    pending_ = static_cast<int>(workers_.size());
    generation_++;
    lock.unlock();
    cv_.notify_all();
    // The caller takes chunks 0, size, 2*size...; worker i takes i, i+size, ...
    for (int c = 0; c < chunks; c += size()) job(c);
    lock.lock();
    done_cv_.wait(lock, [this] { return pending_ == 0; });
    job_ = nullptr;
  }

 private:
  void loop(int id, uint64_t seen) {
    for (;;) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return quit_ || generation_ != seen; });
      if (quit_) return;
      seen = generation_;
      const std::function<void(int)>* job = job_;
      int chunks = chunks_;
      int stride = size();
      lock.unlock();
      for (int c = id; c < chunks; c += stride) (*job)(c);
      lock.lock();
      if (--pending_ == 0) done_cv_.notify_one();
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
  int pending_ = 0;
  uint64_t generation_ = 0;
  bool quit_ = false;
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
