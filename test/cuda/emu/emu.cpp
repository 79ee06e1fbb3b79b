// The CPU emulator's scheduler (see include/cuda_runtime.h for what it is for and what it is not;
// runtime.cpp has the memory checks and the API). One block at a time; its threads are ucontext
// fibers run round-robin, each until it finishes or waits at a barrier. __syncthreads releases when
// every live thread of the block waits there; a warp exchange (shuffle) releases when every live lane
// of the warp has published its value; a warp-wide matrix instruction (warp_collective) runs when
// the last lane of the warp arrives. Each thread keeps its queue of cp.async copies, done when it
// waits for them. Fiber stacks and the dynamic shared memory have a PROT_NONE
// guard page (below the stack, after the shared memory), so a kernel's stack overflow or a write past
// its dynamic shared memory faults and is reported (runtime.cpp's SIGSEGV handler) instead of
// silently corrupting the emulator.
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstring>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cuda_runtime.h"
#include "internal.h"

#if defined(__x86_64__)
// Saves the callee-saved registers on the current stack, stores its pointer in *save_sp, then
// resumes the stack at load_sp. ucontext's swapcontext also saves the signal mask (a system call
// per switch), which doubled the emulator's run time; it remains the fallback elsewhere.
extern "C" void sft_emu_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .globl sft_emu_switch
  .type sft_emu_switch, @function
sft_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size sft_emu_switch, .-sft_emu_switch
)");
#define SFT_EMU_FAST_SWITCH 1
#endif

namespace sft_emu {
namespace {

enum State { kRunnable, kBlockBarrier, kWarpPublish, kWarpRead, kDone };

// One queued cp.async: bytes to copy, of which src_bytes are read (the rest zero-filled).
struct AsyncCopy {
  char* dst;
  const char* src;
  size_t bytes, src_bytes;
};

struct Fiber {
  ucontext_t ctx;
  void* sp = nullptr;
  char* stack = nullptr;  // kStackBytes above kStackGuard; never freed (reused by every launch)
  uint3 tid;
  int linear = 0;
  State state = kDone;
  uint64_t published = 0;
  // The warp instruction it waits at (0: a shuffle), its buffer, and whether the instruction ran.
  int op = 0;
  void* buf = nullptr;
  bool collective_ran = false;
  // cp.async: issued copies (oldest first) and, per committed group, where it ends in `copies`.
  std::vector<AsyncCopy> copies;
  std::vector<size_t> groups;
};

constexpr size_t kStackBytes = 256 * 1024;
// Below each stack: a frame with a large local array can step over a single guard page.
constexpr size_t kStackGuard = 64 * 1024;

ucontext_t scheduler;
void* scheduler_sp = nullptr;
std::vector<Fiber> fibers;
Fiber* current = nullptr;
uint3 cur_block;
dim3 cur_block_dim, cur_grid_dim;
const std::function<void()>* body = nullptr;

// Dynamic shared memory: the launch's bytes end on a guard page (smem_map .. smem_map + smem_cap is
// read-write, the page after it is not); smem is where this launch's bytes start.
char* smem_map = nullptr;
size_t smem_cap = 0;
char* smem = nullptr;
size_t smem_bytes_now = 0;

size_t page_size() {
  static const size_t p = size_t(sysconf(_SC_PAGESIZE));
  return p;
}
size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

[[noreturn]] void fail(const char* what);

// A read-write region of `bytes` (a multiple of the page size) with `guard` PROT_NONE bytes before
// it (guard_before) or after it; returns the start of the read-write part.
char* map_guarded(size_t bytes, size_t guard, bool guard_before) {
  void* m = mmap(nullptr, bytes + guard, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) fail("out of host memory for fiber stacks or shared memory");
  char* base = static_cast<char*>(m);
  if (mprotect(guard_before ? base : base + bytes, guard, PROT_NONE) != 0) fail("mprotect failed");
  return guard_before ? base + guard : base;
}

void prepare_smem(size_t bytes) {
  // 16-byte aligned like the device's; the end (rounded to 16) touches the guard page.
  const size_t need = round_up(bytes, 16);
  if (need > smem_cap || !smem_map) {
    if (smem_map) munmap(smem_map, smem_cap + page_size());
    smem_cap = round_up(need ? need : 1, page_size());
    smem_map = map_guarded(smem_cap, page_size(), false);
  }
  smem = smem_map + smem_cap - need;
  smem_bytes_now = bytes;
  std::memset(smem, 0x7f, need);  // not zero: kernels must not rely on it
}

void to_scheduler() {
#ifdef SFT_EMU_FAST_SWITCH
  sft_emu_switch(&current->sp, scheduler_sp);
#else
  swapcontext(&current->ctx, &scheduler);
#endif
}

void finish_copies(Fiber& f, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const AsyncCopy& c = f.copies[i];
    std::memcpy(c.dst, c.src, c.src_bytes);
    std::memset(c.dst + c.src_bytes, 0, c.bytes - c.src_bytes);
  }
  f.copies.erase(f.copies.begin(), f.copies.begin() + std::ptrdiff_t(n));
  for (size_t& g : f.groups) g -= n;
}

void fiber_entry() {
  (*body)();
  // A thread may exit with copies in flight: on a GPU they still land.
  finish_copies(*current, current->copies.size());
  current->groups.clear();
  current->state = kDone;
  to_scheduler();  // never resumed
  std::abort();
}

void switch_to(Fiber* f) {
#ifdef SFT_EMU_FAST_SWITCH
  sft_emu_switch(&scheduler_sp, f->sp);
#else
  swapcontext(&scheduler, &f->ctx);
#endif
}

// A fresh fiber that starts in fiber_entry on its own stack.
void start(Fiber& f) {
#ifdef SFT_EMU_FAST_SWITCH
  // The stack as sft_emu_switch pops it: six registers, then fiber_entry as the return address,
  // then a dummy return address so fiber_entry starts with the ABI's alignment (rsp = 8 mod 16).
  auto top = reinterpret_cast<uintptr_t>(f.stack + kStackBytes) & ~uintptr_t(15);
  auto* sp = reinterpret_cast<uintptr_t*>(top);
  *--sp = 0;
  *--sp = reinterpret_cast<uintptr_t>(&fiber_entry);
  for (int i = 0; i < 6; i++) *--sp = 0;
  f.sp = sp;
#else
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack;
  f.ctx.uc_stack.ss_size = kStackBytes;
  f.ctx.uc_link = nullptr;
  makecontext(&f.ctx, fiber_entry, 0);
#endif
}

void wait(State s) {
  current->state = s;
  to_scheduler();
}

[[noreturn]] void fail(const char* what) {
  detail::die("kernel %s: %s (block %u,%u,%u)", detail::kernel_name().c_str(), what, cur_block.x, cur_block.y,
              cur_block.z);
}

// Releases the warp barrier lanes t0..t1 wait at, when every live lane of the warp waits there.
bool release_warp(int t0, int t1) {
  for (State s : {kWarpPublish, kWarpRead}) {
    bool all = true, any = false;
    for (int t = t0; t < t1; t++) {
      if (fibers[size_t(t)].state == kDone) continue;
      any = true;
      if (fibers[size_t(t)].state != s) all = false;
    }
    if (any && all) {
      for (int t = t0; t < t1; t++)
        if (fibers[size_t(t)].state == s) fibers[size_t(t)].state = kRunnable;
      return true;
    }
  }
  return false;
}

// Releases __syncthreads when every live thread of the block waits there.
bool release_block(int nthreads) {
  bool any = false;
  for (int t = 0; t < nthreads; t++) {
    if (fibers[size_t(t)].state == kDone) continue;
    any = true;
    if (fibers[size_t(t)].state != kBlockBarrier) return false;
  }
  if (!any) return false;
  for (int t = 0; t < nthreads; t++)
    if (fibers[size_t(t)].state == kBlockBarrier) fibers[size_t(t)].state = kRunnable;
  return true;
}

}  // namespace

const uint3& thread_idx() { return current->tid; }
const uint3& block_idx() { return cur_block; }
const dim3& block_dim() { return cur_block_dim; }
const dim3& grid_dim() { return cur_grid_dim; }
void* dynamic_smem() { return smem; }

void syncthreads() { wait(kBlockBarrier); }

uint64_t exchange(uint64_t v, int src_lane) {
  current->published = v;
  current->op = 0;
  wait(kWarpPublish);
  const int src = (current->linear & ~31) + src_lane;
  if (src >= int(cur_block_dim.x * cur_block_dim.y * cur_block_dim.z) || fibers[src].state == kDone)
    fail("shuffle reads a lane that has exited");
  const uint64_t r = fibers[src].published;
  wait(kWarpRead);  // nobody publishes again before every lane has read
  return r;
}

void warp_collective(int op, void* buf, void (*fn)(void* const* lanes)) {
  const int me = current->linear, t0 = me & ~31;
  if (t0 + 32 > int(cur_block_dim.x * cur_block_dim.y * cur_block_dim.z))
    fail("a warp-wide matrix instruction (mma/ldmatrix) in a partial warp: the block size is not a multiple of 32");
  current->op = op;
  current->buf = buf;
  current->collective_ran = false;
  bool last = true;
  for (int t = t0; t < t0 + 32; t++) {
    if (t == me) continue;
    const Fiber& f = fibers[size_t(t)];
    if (f.state == kDone) {
      char msg[160];
      std::snprintf(msg, sizeof msg, "lane %d of the warp has exited before a warp-wide matrix instruction (mma/ldmatrix), "
                    "which needs all 32 lanes", t - t0);
      fail(msg);
    }
    if (f.state != kWarpPublish) {
      last = false;
    } else if (f.op != op) {
      fail("the lanes of a warp wait at different warp-wide instructions (divergent mma/ldmatrix/shuffle)");
    }
  }
  if (last) {
    void* lanes[32];
    for (int t = t0; t < t0 + 32; t++) lanes[t - t0] = fibers[size_t(t)].buf;
    fn(lanes);
    for (int t = t0; t < t0 + 32; t++) fibers[size_t(t)].collective_ran = true;
  }
  wait(kWarpPublish);
  // Released without the instruction having run: the lanes still missing have exited meanwhile.
  if (!current->collective_ran)
    fail("a lane of the warp exited while the others waited at a warp-wide matrix instruction (mma/ldmatrix)");
}

void kernel_fail(const char* what) { fail(what); }

bool in_dynamic_smem(const void* p, size_t bytes) {
  const char* c = static_cast<const char*>(p);
  return smem && c >= smem && c + bytes <= smem + smem_bytes_now;
}

void cp_async(void* dst, const void* src, size_t bytes, size_t src_bytes) {
  if (!in_dynamic_smem(dst, bytes)) fail("cp.async destination is not inside the launch's dynamic shared memory");
  if (reinterpret_cast<uintptr_t>(dst) % bytes || reinterpret_cast<uintptr_t>(src) % bytes)
    fail("cp.async of 16 bytes with a source or destination that is not 16-byte aligned");
  if (src_bytes > bytes) fail("cp.async source size larger than the copy");
  std::memset(dst, 0xFF, bytes);  // in flight: unreadable until the wait
  current->copies.push_back(AsyncCopy{static_cast<char*>(dst), static_cast<const char*>(src), bytes, src_bytes});
}

void cp_async_commit() { current->groups.push_back(current->copies.size()); }

void cp_async_wait(int pending) {
  Fiber& f = *current;
  const size_t keep = size_t(pending < 0 ? 0 : pending);
  if (f.groups.size() <= keep) return;
  const size_t done = f.groups.size() - keep;  // the oldest groups, complete now
  finish_copies(f, f.groups[done - 1]);
  f.groups.erase(f.groups.begin(), f.groups.begin() + std::ptrdiff_t(done));
}

void run_grid(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& fn) {
  const int nthreads = int(block.x * block.y * block.z);
  if (nthreads <= 0 || nthreads > 1024) fail("block size out of range");
  if (int(fibers.size()) < nthreads) fibers.resize(size_t(nthreads));
  prepare_smem(smem_bytes);
  body = &fn;
  cur_grid_dim = grid;
  cur_block_dim = block;
  for (unsigned bz = 0; bz < grid.z; bz++)
    for (unsigned by = 0; by < grid.y; by++)
      for (unsigned bx = 0; bx < grid.x; bx++) {
        cur_block = uint3{bx, by, bz};
        for (int t = 0; t < nthreads; t++) {
          Fiber& f = fibers[size_t(t)];
          if (!f.stack) f.stack = map_guarded(kStackBytes, kStackGuard, true);
          f.linear = t;
          f.copies.clear();
          f.groups.clear();
          f.tid = uint3{unsigned(t) % block.x, (unsigned(t) / block.x) % block.y, unsigned(t) / (block.x * block.y)};
          start(f);
          f.state = kRunnable;
        }
        // One warp at a time, as far as it can go (through its shuffles) before the next warp
        // starts: a read that misses a __syncthreads then sees another warp's data not yet
        // written. Even blocks run warps in ascending order, odd blocks descending, so both
        // directions of a missing barrier show up.
        const int nwarps = (nthreads + 31) / 32;
        const bool descending = (bx + by + bz) & 1;
        for (;;) {
          bool ran = false;
          for (int wi = 0; wi < nwarps; wi++) {
            const int w = descending ? nwarps - 1 - wi : wi;
            const int t0 = 32 * w, t1 = t0 + 32 < nthreads ? t0 + 32 : nthreads;
            for (;;) {
              bool warp_ran = false;
              for (int t = t0; t < t1; t++) {
                if (fibers[size_t(t)].state != kRunnable) continue;
                current = &fibers[size_t(t)];
                switch_to(current);
                warp_ran = ran = true;
              }
              if (!release_warp(t0, t1) && !warp_ran) break;
            }
          }
          bool done = true;
          for (int t = 0; t < nthreads; t++) done = done && fibers[size_t(t)].state == kDone;
          if (done) break;
          if (!release_block(nthreads) && !ran) fail("deadlock: threads wait at barriers that can never release");
        }
      }
  current = nullptr;
}

namespace detail {

bool running_thread(uint3* block, uint3* thread) {
  if (!current) return false;
  *block = cur_block;
  *thread = current->tid;
  return true;
}

bool fiber_stack_overflow(uintptr_t a, uintptr_t sp) {
  for (const Fiber& f : fibers) {
    if (!f.stack) continue;
    const auto lo = reinterpret_cast<uintptr_t>(f.stack);
    if (a >= lo - kStackGuard && a < lo) return true;
  }
  // The running fiber's stack pointer at (or past) the bottom of its stack: whatever the address.
  if (!current || !sp) return false;
  const auto lo = reinterpret_cast<uintptr_t>(current->stack);
  return sp >= lo - kStackGuard && sp < lo + 256;
}

bool in_smem_guard(uintptr_t a, size_t* bytes, uintptr_t* base) {
  if (!smem_map) return false;
  const auto g = reinterpret_cast<uintptr_t>(smem_map + smem_cap);
  if (a < g || a >= g + page_size()) return false;
  *bytes = smem_bytes_now;
  *base = reinterpret_cast<uintptr_t>(smem);
  return true;
}

}  // namespace detail
}  // namespace sft_emu
