#include "core/threads.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace sft {
namespace {

// A job is published as one atomic word, `ticket_` = generation (32 bits) | chunks (16) | next
// unclaimed chunk (16). Every thread, the caller included, claims chunks from it by compare-and-
// swap until none is left, so a worker the OS has descheduled (the cores here are shared) delays
// nothing: the others take its chunks. A chunk's range does not depend on who runs it, so results
// do not either. A successful claim proves the job is still running (the caller waits for every
// claimed chunk to finish), which is what makes reading job_ after it safe.
// Idle threads spin briefly (kSpin, longer than the serial gaps between a decode token's regions) before they sleep on a condition variable: at batch-1 decode a
// region lasts microseconds and the next one follows within microseconds, and a futex sleep and
// wake-up per region (tens of microseconds when the other core is busy) cost more than the work.
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
      // A new worker starts from the current generation: jobs that ran before a resize are not its own.
      const uint32_t gen = generation(ticket_.load());
      for (int i = 1; i < n; i++) workers_.emplace_back([this, gen] { loop(gen); });
    } catch (const std::system_error& e) {
      const size_t started = workers_.size() + 1;
      stop();
      throw std::runtime_error("could not start " + std::to_string(n) + " CPU threads (" + std::to_string(started) +
                               " started: " + e.what() + "); set threads lower (0 = one per core)");
    }
  }

  static constexpr int kMaxChunks = 0xffff;

  // The caller has no more work for a while: spinning workers go to sleep now.
  void rest() { rest_.store(true, std::memory_order_relaxed); }

  // Runs job(c) for every c in [0, chunks), chunks <= kMaxChunks.
  void run(int chunks, const std::function<void(int)>& job) {
    if (chunks <= 1 || workers_.empty()) {
      for (int c = 0; c < chunks; c++) job(c);
      return;
    }
    job_ = &job;
    done_.store(0);
    rest_.store(false, std::memory_order_relaxed);
    const uint64_t gen = uint64_t(generation(ticket_.load()) + 1);
    // seq_cst on both sides (here: ticket, then sleepers; a worker: sleepers, then ticket) means
    // a worker going to sleep either sees the new job or is seen and woken.
    ticket_.store(gen << 32 | uint64_t(chunks) << 16);
    if (sleepers_.load() > 0) {
      std::lock_guard<std::mutex> lock(mu_);
      cv_.notify_all();
    }
    work(uint32_t(gen));
    if (!spin_until([&] { return done_.load(std::memory_order_acquire) == chunks; })) {
      std::unique_lock<std::mutex> lock(mu_);
      caller_waits_.store(true);
      done_cv_.wait(lock, [&] { return done_.load() == chunks; });
      caller_waits_.store(false);
    }
  }

 private:
  static uint32_t generation(uint64_t t) { return uint32_t(t >> 32); }

  // Claims and runs chunks of job `gen` until none is left (or a newer job has replaced it).
  void work(uint32_t gen) {
    uint64_t t = ticket_.load();
    for (;;) {
      const int chunks = int((t >> 16) & 0xffff), next = int(t & 0xffff);
      if (generation(t) != gen || next >= chunks) return;
      if (!ticket_.compare_exchange_weak(t, t + 1)) continue;  // t reloaded
      (*job_)(next);
      if (done_.fetch_add(1) + 1 == chunks && caller_waits_.load()) {
        std::lock_guard<std::mutex> lock(mu_);
        done_cv_.notify_one();
      }
      t = ticket_.load();
    }
  }

  // Spins until done() or about kSpin has passed; whether done() came true.
  template <class F>
  static bool spin_until(const F& done) {
    constexpr auto kSpin = std::chrono::microseconds(50);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0;; i++) {
      if (done()) return true;
      cpu_relax();
      if ((i & 255) == 255 && std::chrono::steady_clock::now() - t0 > kSpin) return done();
    }
  }

  static void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }

  void loop(uint32_t seen) {
    for (;;) {
      const auto fresh = [&] { return quit_.load() || generation(ticket_.load()) != seen; };
      const auto fresh_or_rest = [&] { return fresh() || rest_.load(std::memory_order_relaxed); };
      if (!spin_until(fresh_or_rest) || !fresh()) {
        std::unique_lock<std::mutex> lock(mu_);
        sleepers_.fetch_add(1);
        cv_.wait(lock, fresh);
        sleepers_.fetch_sub(1);
      }
      if (quit_.load()) return;
      seen = generation(ticket_.load());
      work(seen);
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      quit_.store(true);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int)>* job_ = nullptr;  // written before the ticket that publishes it
  std::atomic<uint64_t> ticket_{0};
  std::atomic<int> done_{0}, sleepers_{0};
  std::atomic<bool> caller_waits_{false}, quit_{false}, rest_{false};
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

void rest_threads() { pool().rest(); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn, int chunks_per_thread) {
  if (n <= 0) return;
  const int64_t threads = num_threads();
  const int64_t most = std::min<int64_t>(Pool::kMaxChunks, threads * std::max(1, chunks_per_thread));
  int64_t chunks = std::min<int64_t>(most, (n + std::max<int64_t>(grain, 1) - 1) / std::max<int64_t>(grain, 1));
  if (threads <= 1) chunks = 1;
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
