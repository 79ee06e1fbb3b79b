// The CPU emulator's runtime (see include/cuda_runtime.h for what it checks and what it cannot):
// tracked device and pinned host allocations, copy and launch checks, the fault handler, the leak
// report at exit, errors, streams, events, device attributes. Single-threaded and synchronous: every
// call completes before it returns; one mutex keeps host threads from interleaving inside it.
//
// An allocation of n bytes is its own mapping:
//
//   | guard page | canary ... | data (n bytes, 0xFF) | canary (to 256) | guard page |
//                ^ data pages              ^ start (256-aligned)         ^ start + round_up(n, 256)
//
// so the first byte past the 256-byte rounding faults, and a write into the rounding slack (or
// before the start on the first page) breaks a canary that end_launch, the frees and the
// synchronisations verify. Device data pages are PROT_NONE except while a kernel runs (its pointer
// arguments are opened before it starts; any other allocation it reaches, e.g. through a table of
// pointers, is opened by the fault handler on first touch) and during the emulator's own copies.
// Freed mappings stay reserved as PROT_NONE (a quarantine, oldest released first) so that a use
// after free faults and is named.
#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <execinfo.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "cuda_runtime.h"
#include "internal.h"

struct CUstream_st {
  unsigned flags = 0;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point t;
  unsigned flags = 0;
  bool recorded = false;
};
struct CUmemPoolHandle_st {
  uint64_t release_threshold = 0;
  int reuse[4] = {1, 1, 1, 1};
};

namespace sft_emu {
namespace {

// --- the emulated device ------------------------------------------------------------------------
// The tightest limits among the architectures CMakeLists.txt builds for (80;86;89;90): sm_86/sm_89
// have 99 KiB of opt-in shared memory per block, so a kernel that needs more fails here too.
constexpr int kCcMajor = 8, kCcMinor = 6;
constexpr int kSmemPerBlock = 48 * 1024;
constexpr int kSmemOptin = 99 * 1024;
constexpr int kSmemPerSM = 100 * 1024;
constexpr int kMultiProcessors = 1;  // one block at a time
constexpr int kVersion = CUDART_VERSION;
constexpr size_t kDefaultDeviceMemory = size_t(4) << 30;

constexpr size_t kAlign = 256;  // cudaMalloc's alignment
// Canary bytes alternate A5 (even addresses) and FF (odd): read as fp32 or bf16 they are NaN too,
// and they differ from the poison, so a kernel's write of poison-like NaN is still seen.
constexpr uint64_t kCanaryWord = 0xFFA5FFA5FFA5FFA5ull;
inline unsigned char canary_byte(uintptr_t a) { return (a & 1) ? 0xFF : 0xA5; }
// Freed mappings kept PROT_NONE (address space only, their pages are released at once).
constexpr size_t kQuarantineBytes = size_t(32) << 30;
constexpr size_t kQuarantineCount = 32768;
constexpr int kFrames = 8;
constexpr size_t kAltStackBytes = 256 * 1024;  // the handler symbolises and formats on it

// --- messages -----------------------------------------------------------------------------------

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  const int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return "";
  if (size_t(n) < sizeof buf) return buf;
  std::string s(size_t(n) + 1, '\0');
  va_start(ap, fmt);
  std::vsnprintf(&s[0], s.size(), fmt, ap);
  va_end(ap);
  s.resize(size_t(n));
  return s;
}

std::string demangle(const char* m) {
  int status = 0;
  char* d = abi::__cxa_demangle(m, nullptr, nullptr, &status);
  std::string r = status == 0 && d ? d : m;
  std::free(d);
  return r;
}

// "void ns::(anonymous namespace)::f<float>(float*, int) [clone .constprop.0]" -> without the
// parameter list and clone suffix; unqualified() then keeps "f<float>".
std::string strip_params(std::string s) {
  const size_t c = s.find(" [clone");
  if (c != std::string::npos) s.resize(c);
  if (s.empty() || s.back() != ')') return s;
  int depth = 0;
  for (size_t i = s.size(); i-- > 0;) {
    if (s[i] == ')') depth++;
    if (s[i] == '(' && --depth == 0) {
      s.resize(i);
      break;
    }
  }
  return s;
}
// Without a leading return type ("void f<float>" -> "f<float>") and "(anonymous namespace)::".
std::string clean(const std::string& demangled) {
  std::string s = strip_params(demangled);
  int angle = 0, paren = 0;
  size_t cut = 0;
  for (size_t i = 0; i < s.size(); i++) {
    const char c = s[i];
    if (c == '<') angle++;
    else if (c == '>') angle--;
    else if (c == '(') paren++;
    else if (c == ')') paren--;
    else if (angle == 0 && paren == 0 && c == ' ') cut = i + 1;
  }
  s.erase(0, cut);
  for (size_t p; (p = s.find("(anonymous namespace)::")) != std::string::npos;) s.erase(p, 23);
  return s;
}
std::string unqualified(const std::string& s) {
  int angle = 0, paren = 0;
  size_t cut = 0;
  for (size_t i = 0; i < s.size(); i++) {
    const char c = s[i];
    if (c == '<') angle++;
    else if (c == '>') angle--;
    else if (c == '(') paren++;
    else if (c == ')') paren--;
    else if (angle == 0 && paren == 0 && c == ' ') cut = i + 1;
    else if (angle == 0 && paren == 0 && c == ':' && i + 1 < s.size() && s[i + 1] == ':') cut = ++i + 1;
  }
  return s.substr(cut);
}

// --- symbols: the ELF symbol tables of the loaded objects, so that messages name static kernels
// (internal linkage, absent from the dynamic symbol table dladdr reads). Used for messages only.

struct Sym {
  uintptr_t lo, hi;
  const char* name;
};
struct ObjectSymbols {
  std::vector<Sym> syms;
  uintptr_t min_vaddr = 0;
  bool ok = false;
};

ObjectSymbols* load_symbols(const std::string& path) {
  static auto* cache = new std::map<std::string, ObjectSymbols*>();
  auto it = cache->find(path);
  if (it != cache->end()) return it->second;
  auto* o = new ObjectSymbols();
  (*cache)[path] = o;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return o;
  struct stat sb;
  if (fstat(fd, &sb) != 0 || size_t(sb.st_size) < sizeof(Elf64_Ehdr)) {
    close(fd);
    return o;
  }
  const size_t len = size_t(sb.st_size);
  void* m = mmap(nullptr, len, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (m == MAP_FAILED) return o;
  const char* base = static_cast<const char*>(m);
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(base);
  if (std::memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64) return o;
  if (eh->e_phoff + size_t(eh->e_phnum) * sizeof(Elf64_Phdr) > len ||
      eh->e_shoff + size_t(eh->e_shnum) * sizeof(Elf64_Shdr) > len)
    return o;
  const auto* ph = reinterpret_cast<const Elf64_Phdr*>(base + eh->e_phoff);
  uintptr_t minv = UINTPTR_MAX;
  for (int i = 0; i < eh->e_phnum; i++)
    if (ph[i].p_type == PT_LOAD) minv = std::min<uintptr_t>(minv, ph[i].p_vaddr);
  o->min_vaddr = minv == UINTPTR_MAX ? 0 : minv & ~uintptr_t(sysconf(_SC_PAGESIZE) - 1);
  const auto* sh = reinterpret_cast<const Elf64_Shdr*>(base + eh->e_shoff);
  for (const uint32_t want : {uint32_t(SHT_SYMTAB), uint32_t(SHT_DYNSYM)}) {
    for (int i = 0; i < eh->e_shnum && o->syms.empty(); i++) {
      if (sh[i].sh_type != want || sh[i].sh_link >= eh->e_shnum) continue;
      const Elf64_Shdr& str = sh[sh[i].sh_link];
      if (sh[i].sh_offset + sh[i].sh_size > len || str.sh_offset + str.sh_size > len) continue;
      const auto* sy = reinterpret_cast<const Elf64_Sym*>(base + sh[i].sh_offset);
      for (size_t j = 0; j < sh[i].sh_size / sizeof(Elf64_Sym); j++) {
        if (ELF64_ST_TYPE(sy[j].st_info) != STT_FUNC || !sy[j].st_value || sy[j].st_shndx == SHN_UNDEF ||
            sy[j].st_name >= str.sh_size)
          continue;
        o->syms.push_back({uintptr_t(sy[j].st_value), uintptr_t(sy[j].st_value + std::max<uint64_t>(sy[j].st_size, 1)),
                           base + str.sh_offset + sy[j].st_name});
      }
    }
    if (!o->syms.empty()) break;
  }
  std::sort(o->syms.begin(), o->syms.end(), [](const Sym& a, const Sym& b) { return a.lo < b.lo; });
  o->ok = true;
  return o;
}

// The demangled name of the function holding `addr` ("" if unknown), the offset into it, the
// object's file name and the address within the file (what addr2line -e FILE takes).
std::string symbolize(uintptr_t addr, uintptr_t* offset, std::string* module, uintptr_t* file_addr) {
  Dl_info info{};
  *offset = 0;
  *file_addr = addr;
  if (!dladdr(reinterpret_cast<void*>(addr), &info) || !info.dli_fbase) return "";
  std::string path = info.dli_fname ? info.dli_fname : "";
  ObjectSymbols* o = path.empty() ? nullptr : load_symbols(path);
  if (!o || !o->ok) o = load_symbols(path = "/proc/self/exe");  // the main program, run by a relative path
  *module = path.substr(path.rfind('/') + 1);
  const uintptr_t rel = addr - (reinterpret_cast<uintptr_t>(info.dli_fbase) - o->min_vaddr);
  *file_addr = rel;
  auto it = std::upper_bound(o->syms.begin(), o->syms.end(), rel, [](uintptr_t a, const Sym& s) { return a < s.lo; });
  if (it != o->syms.begin() && rel < (it - 1)->hi) {
    *offset = rel - (it - 1)->lo;
    return demangle((it - 1)->name);
  }
  if (info.dli_sname && info.dli_saddr) {
    *offset = addr - reinterpret_cast<uintptr_t>(info.dli_saddr);
    return demangle(info.dli_sname);
  }
  return "";
}

std::string function_name(const void* p, bool qualified) {
  uintptr_t off, file_addr;
  std::string module;
  const std::string n = symbolize(reinterpret_cast<uintptr_t>(p), &off, &module, &file_addr);
  if (n.empty()) return "";
  return qualified ? clean(n) : unqualified(clean(n));
}

std::string kernel_label(const void* fn, const std::type_info* type) {
  if (fn) {
    const std::string n = function_name(fn, false);
    if (!n.empty()) return n;
  }
  if (type) return (fn ? format("at %p ", fn) : std::string()) + "of type " + demangle(type->name());
  return "(none)";
}

void print_frames(FILE* f, void* const* frames, int n) {
  for (int i = 0; i < n; i++) {
    uintptr_t off, file_addr;
    std::string module;
    const std::string name = symbolize(reinterpret_cast<uintptr_t>(frames[i]), &off, &module, &file_addr);
    std::fprintf(f, "    #%d %s+0x%lx (%s+0x%lx)\n", i, name.empty() ? "??" : clean(name).c_str(),
                 static_cast<unsigned long>(off), module.empty() ? "?" : module.c_str(),
                 static_cast<unsigned long>(file_addr));
  }
}

// --- state --------------------------------------------------------------------------------------

enum class Kind { Device, Pinned };

struct Alloc {
  uintptr_t region = 0;  // the whole mapping, guard pages included
  size_t region_len = 0;
  uintptr_t data = 0;  // the data pages between the guards
  size_t data_len = 0;
  uintptr_t start = 0;  // what the allocating call returned
  size_t size = 0;      // requested bytes
  size_t rounded = 0;   // size rounded up to 256
  Kind kind = Kind::Device;
  const char* api = "";
  const char* freed_by = nullptr;
  uint64_t seq = 0;
  bool accessible = false;  // data pages read-write now (device memory: only during a kernel or copy)
  bool async = false;       // from cudaMallocAsync (the default pool's statistics)
  int nframes = 0;
  void* frames[kFrames];
};

struct State {
  std::recursive_mutex mu;
  size_t page = 4096;
  size_t limit = kDefaultDeviceMemory;
  // New allocations' bytes: 0xFF is NaN as fp32 and bf16. SFT_EMU_POISON=00 (any hex byte) changes
  // it: a result that differs between two poisons reads memory nobody wrote, even where the NaN
  // got lost on the way (fmaxf, a comparison, a mask).
  unsigned char poison = 0xFF;
  size_t device_bytes = 0, device_count = 0, pinned_bytes = 0, pinned_count = 0, device_peak = 0;
  size_t pool_used = 0, pool_high = 0;
  uint64_t next_seq = 1;
  std::map<uintptr_t, Alloc> live;   // by region start
  std::map<uintptr_t, Alloc> freed;  // quarantined mappings, by region start
  std::deque<uintptr_t> freed_order;
  size_t freed_bytes = 0;
  // The running launch (the mutex is held from begin_launch to end_launch).
  bool in_kernel = false;
  pthread_t launch_thread{};
  const void* kernel_fn = nullptr;
  const std::type_info* kernel_type = nullptr;
  std::vector<Alloc*> touched;  // device allocations opened for it; capacity >= live device count
  std::set<CUstream_st*> streams;
  std::set<CUevent_st*> events;
  std::map<const void*, int> smem_optin;
  CUmemPoolHandle_st pool;
  cudaError_t last_error = cudaSuccess;
  struct sigaction old_segv {}, old_bus {};
};

State* g = nullptr;

void on_fault(int sig, siginfo_t* si, void* ctx);
void at_exit();
void report(FILE* out);

size_t parse_bytes(const char* s, bool* ok) {
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s, &end);
  *ok = false;
  if (end == s || errno || !(v >= 0)) return 0;
  double mult = 1;
  switch (std::toupper(static_cast<unsigned char>(*end))) {
    case 'K': mult = 1024.0, end++; break;
    case 'M': mult = 1024.0 * 1024, end++; break;
    case 'G': mult = 1024.0 * 1024 * 1024, end++; break;
    case 'T': mult = 1024.0 * 1024 * 1024 * 1024, end++; break;
    default: break;
  }
  if (mult > 1 && std::toupper(static_cast<unsigned char>(*end)) == 'I') end++;
  if (std::toupper(static_cast<unsigned char>(*end)) == 'B') end++;
  if (*end) return 0;
  *ok = v * mult < 1.8e19;
  return size_t(v * mult);
}

void ensure_altstack() {
  // The handler must not run on a fiber's stack (256 KiB, it may be the one that overflowed).
  static thread_local bool done = false;
  if (done) return;
  done = true;
  stack_t old{};
  if (sigaltstack(nullptr, &old) == 0 && !(old.ss_flags & SS_DISABLE) && old.ss_size >= kAltStackBytes) return;
  void* m = mmap(nullptr, kAltStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return;
  stack_t ss{};
  ss.ss_sp = m;
  ss.ss_size = kAltStackBytes;
  sigaltstack(&ss, nullptr);
}

State& st() {
  static State* s = [] {
    auto* n = new State();  // never destroyed: at_exit and the fault handler read it to the end
    n->page = size_t(sysconf(_SC_PAGESIZE));
    if (const char* e = std::getenv("SFT_EMU_DEVICE_MEMORY"); e && *e) {
      bool ok = false;
      n->limit = parse_bytes(e, &ok);
      if (!ok)
        detail::die("SFT_EMU_DEVICE_MEMORY=%s is not a size (bytes, or with a suffix K, M, G, T: e.g. 64M, 2G)", e);
    }
    if (const char* e = std::getenv("SFT_EMU_POISON"); e && *e) {
      char* end = nullptr;
      const unsigned long v = std::strtoul(e, &end, 16);
      if (*end || v > 255) detail::die("SFT_EMU_POISON=%s is not a hex byte (e.g. ff, 00)", e);
      n->poison = static_cast<unsigned char>(v);
    }
    void* f[2];
    backtrace(f, 2);  // loads the unwinder now, not first in the fault handler
    g = n;
    struct sigaction sa {};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &n->old_segv);
    sigaction(SIGBUS, &sa, &n->old_bus);
    std::atexit(at_exit);
    return n;
  }();
  return *s;
}

// Every API entry: the lock, and an alternate signal stack on this thread.
struct Api {
  std::lock_guard<std::recursive_mutex> lock;
  State& s;
  Api() : lock(st().mu), s(*g) { ensure_altstack(); }
};

cudaError_t record(cudaError_t e) {
  if (e != cudaSuccess) st().last_error = e;
  return e;
}

size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

// The mapping holding `a` (guard pages included), in `m`; null if none.
Alloc* find_region(std::map<uintptr_t, Alloc>& m, uintptr_t a) {
  auto it = m.upper_bound(a);
  if (it == m.begin()) return nullptr;
  --it;
  return a < it->first + it->second.region_len ? &it->second : nullptr;
}

std::string describe(const Alloc& a) {
  return format("the %zu-byte %s allocation #%llu (from %s, base %p%s%s)", a.size,
                a.kind == Kind::Device ? "device" : "pinned host", static_cast<unsigned long long>(a.seq), a.api,
                reinterpret_cast<void*>(a.start), a.freed_by ? ", freed by " : "", a.freed_by ? a.freed_by : "");
}
long long offset_in(const Alloc& a, uintptr_t p) { return static_cast<long long>(p - a.start); }

void set_access(Alloc& a, bool rw) {
  if (a.accessible == rw) return;
  if (a.data_len && mprotect(reinterpret_cast<void*>(a.data), a.data_len, rw ? PROT_READ | PROT_WRITE : PROT_NONE) != 0)
    detail::die("mprotect of %s failed: %s", describe(a).c_str(), std::strerror(errno));
  a.accessible = rw;
}

// Where allocation a was made: the first frames outside the emulator.
std::string made_at(const Alloc& a) {
  std::string r;
  int shown = 0;
  for (int i = 0; i < a.nframes && shown < 4; i++) {
    uintptr_t off, file_addr;
    std::string module;
    const std::string full = symbolize(reinterpret_cast<uintptr_t>(a.frames[i]), &off, &module, &file_addr);
    const std::string n = full.empty() ? "" : clean(full);
    const bool api = n.size() > 4 && n.compare(0, 4, "cuda") == 0 && std::isupper(static_cast<unsigned char>(n[4]));
    if (n.rfind("sft_emu::", 0) == 0 || api) continue;
    r += (shown++ ? " <- " : "") + (n.empty() ? format("%s+0x%lx", module.c_str(), static_cast<unsigned long>(file_addr)) : n);
    if (n == "main") break;
  }
  return r.empty() ? "?" : r;
}

// The first canary byte that changed: past the end (*after true) or, else, the one closest before
// the start. False when all are intact. The data pages must be readable.
bool broken_canary(const Alloc& a, uintptr_t* where, bool* after) {
  for (uintptr_t p = a.start + a.size; p < a.start + a.rounded; p++)
    if (*reinterpret_cast<const unsigned char*>(p) != canary_byte(p)) return *where = p, *after = true, true;
  bool bad = false;
  for (uintptr_t p = a.data; p < a.start; p += 8) bad |= *reinterpret_cast<const uint64_t*>(p) != kCanaryWord;
  if (!bad) return false;
  for (uintptr_t p = a.start; p-- > a.data;)
    if (*reinterpret_cast<const unsigned char*>(p) != canary_byte(p)) return *where = p, *after = false, true;
  return false;
}

// Verifies a's canaries. who: the kernel just run, or null when found later (at found_at).
void verify(Alloc& a, const char* who, const char* found_at) {
  const bool was = a.accessible;
  if (!was && a.data_len) set_access(a, true);
  uintptr_t p = 0;
  bool after = false;
  if (broken_canary(a, &p, &after)) {
    const std::string what =
        after ? format("wrote past the end of a %zu-byte allocation: byte %zu past its end (%p) holds 0x%02x", a.size,
                       size_t(p - a.start - a.size), reinterpret_cast<void*>(p), *reinterpret_cast<unsigned char*>(p))
              : format("wrote before the start of a %zu-byte allocation: %zu byte(s) before its start (%p) holds 0x%02x",
                       a.size, size_t(a.start - p), reinterpret_cast<void*>(p), *reinterpret_cast<unsigned char*>(p));
    if (who)
      detail::die("kernel %s %s; it is %s, allocated at %s", who, what.c_str(), describe(a).c_str(), made_at(a).c_str());
    detail::die("%s %s (found at %s; the last kernel launched was %s); it is %s, allocated at %s",
                a.kind == Kind::Pinned ? "host code" : "a kernel", what.c_str(), found_at, detail::kernel_name().c_str(),
                describe(a).c_str(), made_at(a).c_str());
  }
  if (!was) set_access(a, false);
}

void verify_all(bool device_too, const char* found_at) {
  // Device memory is closed outside kernels and copies, and every allocation a kernel reached was
  // verified when it ended, so only a full device synchronisation re-reads them all.
  for (auto& [base, a] : g->live)
    if (a.kind == Kind::Pinned || device_too) verify(a, nullptr, found_at);
}

cudaError_t alloc_impl(Kind kind, size_t n, const char* api, void** out) {
  State& s = *g;
  *out = nullptr;
  if (kind == Kind::Device && n > s.limit - s.device_bytes) return record(cudaErrorMemoryAllocation);
  if (n > (size_t(1) << 46)) return record(cudaErrorMemoryAllocation);
  const size_t rounded = round_up(n, kAlign), data_len = round_up(rounded, s.page), region_len = data_len + 2 * s.page;
  void* m = mmap(nullptr, region_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return record(cudaErrorMemoryAllocation);
  Alloc a;
  a.region = reinterpret_cast<uintptr_t>(m);
  a.region_len = region_len;
  a.data = a.region + s.page;
  a.data_len = data_len;
  a.start = a.data + data_len - rounded;
  a.size = n;
  a.rounded = rounded;
  a.kind = kind;
  a.api = api;
  a.async = std::strcmp(api, "cudaMallocAsync") == 0;
  a.seq = s.next_seq++;
  a.nframes = backtrace(a.frames, kFrames);
  if (data_len) {
    if (mprotect(reinterpret_cast<void*>(a.data), data_len, PROT_READ | PROT_WRITE) != 0) {
      munmap(m, region_len);
      return record(cudaErrorMemoryAllocation);
    }
    a.accessible = true;
    for (uintptr_t p = a.data; p < a.start; p += 8) *reinterpret_cast<uint64_t*>(p) = kCanaryWord;
    std::memset(reinterpret_cast<void*>(a.start), s.poison, n);
    for (uintptr_t p = a.start + n; p < a.start + rounded; p++) *reinterpret_cast<unsigned char*>(p) = canary_byte(p);
  }
  auto& slot = s.live[a.region];
  slot = a;
  if (kind == Kind::Device) {
    set_access(slot, false);
    s.device_bytes += n;
    s.device_peak = std::max(s.device_peak, s.device_bytes);
    s.device_count++;
    if (slot.async) s.pool_high = std::max(s.pool_high, s.pool_used += n);
  } else {
    s.pinned_bytes += n;
    s.pinned_count++;
  }
  *out = reinterpret_cast<void*>(a.start);
  return cudaSuccess;
}

cudaError_t free_impl(Kind kind, void* ptr, const char* api) {
  State& s = *g;
  if (!ptr) return cudaSuccess;
  const auto p = reinterpret_cast<uintptr_t>(ptr);
  Alloc* a = find_region(s.live, p);
  if (!a) {
    if (Alloc* f = find_region(s.freed, p)) {
      if (p == f->start) detail::die("%s(%p): double free of %s", api, ptr, describe(*f).c_str());
      detail::die("%s(%p): not an allocation: offset %lld of %s", api, ptr, offset_in(*f, p), describe(*f).c_str());
    }
    detail::die("%s(%p): not a pointer that %s returned (a host pointer, or never allocated)", api, ptr,
                kind == Kind::Device ? "cudaMalloc or cudaMallocAsync" : "cudaMallocHost or cudaHostAlloc");
  }
  if (a->kind != kind)
    detail::die("%s(%p) of %s: free it with %s", api, ptr, describe(*a).c_str(),
                a->kind == Kind::Device ? "cudaFree" : "cudaFreeHost");
  if (p != a->start)
    detail::die("%s(%p): not the start of an allocation: offset %lld of %s", api, ptr, offset_in(*a, p),
                describe(*a).c_str());
  verify(*a, nullptr, api);
  // A fresh PROT_NONE mapping in place: the pages go back to the system, the addresses stay taken.
  if (mmap(reinterpret_cast<void*>(a->region), a->region_len, PROT_NONE,
           MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0) == MAP_FAILED)
    detail::die("%s(%p): mmap failed: %s", api, ptr, std::strerror(errno));
  a->accessible = false;
  a->freed_by = api;
  if (kind == Kind::Device) {
    s.device_bytes -= a->size;
    s.device_count--;
    if (a->async) s.pool_used -= a->size;
  } else {
    s.pinned_bytes -= a->size;
    s.pinned_count--;
  }
  s.freed[a->region] = *a;
  s.freed_order.push_back(a->region);
  s.freed_bytes += a->region_len;
  s.live.erase(a->region);
  while (s.freed_bytes > kQuarantineBytes || s.freed_order.size() > kQuarantineCount) {
    auto it = s.freed.find(s.freed_order.front());
    s.freed_order.pop_front();
    munmap(reinterpret_cast<void*>(it->second.region), it->second.region_len);
    s.freed_bytes -= it->second.region_len;
    s.freed.erase(it);
  }
  return cudaSuccess;
}

void check_stream(const char* api, cudaStream_t stream) {
  if (!stream || stream == cudaStreamLegacy || stream == cudaStreamPerThread || g->streams.count(stream)) return;
  detail::die("%s: stream %p is not a live stream (destroyed, or not made by cudaStreamCreate)", api,
              static_cast<void*>(stream));
}
void check_event(const char* api, cudaEvent_t e) {
  if (!g->events.count(e))
    detail::die("%s: event %p is not a live event (destroyed, or not made by cudaEventCreate)", api,
                static_cast<void*>(e));
}

// --- copies -------------------------------------------------------------------------------------

const char* kind_name(cudaMemcpyKind k) {
  switch (k) {
    case cudaMemcpyHostToHost: return "cudaMemcpyHostToHost";
    case cudaMemcpyHostToDevice: return "cudaMemcpyHostToDevice";
    case cudaMemcpyDeviceToHost: return "cudaMemcpyDeviceToHost";
    case cudaMemcpyDeviceToDevice: return "cudaMemcpyDeviceToDevice";
    case cudaMemcpyDefault: return "cudaMemcpyDefault";
  }
  return "?";
}

// Whether p is (or was) device memory: what cudaMemcpyDefault goes by.
bool is_device(uintptr_t p) {
  if (Alloc* a = find_region(g->live, p)) return a->kind == Kind::Device;
  if (Alloc* a = find_region(g->freed, p)) return a->kind == Kind::Device;
  return false;
}

// [p, p + n) must lie inside one live device allocation; returns it.
Alloc* device_range(const std::string& call, const char* role, uintptr_t p, size_t n) {
  Alloc* a = find_region(g->live, p);
  if (a && a->kind == Kind::Device) {
    if (p >= a->start && p <= a->start + a->size && n <= a->start + a->size - p) return a;
    detail::die("%s: the %s [offset %lld, +%zu bytes) is not inside %s: it ends %lld bytes past its end", call.c_str(),
                role, offset_in(*a, p), n, describe(*a).c_str(),
                static_cast<long long>(p + n) - static_cast<long long>(a->start + a->size));
  }
  if (a) detail::die("%s: the %s %p is in %s, not device memory", call.c_str(), role, reinterpret_cast<void*>(p), describe(*a).c_str());
  if (Alloc* f = find_region(g->freed, p))
    detail::die("%s: the %s %p is freed memory (use after free): offset %lld of %s", call.c_str(), role,
                reinterpret_cast<void*>(p), offset_in(*f, p), describe(*f).c_str());
  detail::die("%s: the %s %p is not device memory (a host pointer, or never allocated)", call.c_str(), role,
              reinterpret_cast<void*>(p));
}

// [p, p + n) must not be device memory; inside a pinned allocation it must fit.
void host_range(const std::string& call, const char* role, uintptr_t p, size_t n) {
  Alloc* a = find_region(g->live, p);
  if (!a) a = find_region(g->freed, p);
  if (!a) return;
  if (a->kind == Kind::Device)
    detail::die("%s: the %s %p is device memory (offset %lld of %s), but the copy says host memory", call.c_str(), role,
                reinterpret_cast<void*>(p), offset_in(*a, p), describe(*a).c_str());
  if (a->freed_by)
    detail::die("%s: the %s %p is freed pinned memory (use after free): offset %lld of %s", call.c_str(), role,
                reinterpret_cast<void*>(p), offset_in(*a, p), describe(*a).c_str());
  if (p < a->start || p > a->start + a->size || n > a->start + a->size - p)
    detail::die("%s: the %s [offset %lld, +%zu bytes) is not inside %s", call.c_str(), role, offset_in(*a, p), n,
                describe(*a).c_str());
}

// The span of a pitched 2-D copy (rows of `width` bytes, `pitch` apart).
size_t span(size_t pitch, size_t width, size_t height) { return pitch * (height - 1) + width; }

cudaError_t copy_impl(const char* api, void* dst, size_t dpitch, const void* src, size_t spitch, size_t width,
                      size_t height, cudaMemcpyKind kind) {
  if (unsigned(kind) > unsigned(cudaMemcpyDefault)) return record(cudaErrorInvalidMemcpyDirection);
  if (width > dpitch || width > spitch) return record(cudaErrorInvalidPitchValue);
  if (!width || !height) return cudaSuccess;
  const auto d = reinterpret_cast<uintptr_t>(dst), s = reinterpret_cast<uintptr_t>(src);
  const size_t dn = span(dpitch, width, height), sn = span(spitch, width, height);
  bool d_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  bool s_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind == cudaMemcpyDefault) d_dev = is_device(d), s_dev = is_device(s);
  const std::string call =
      height == 1 && dpitch == width
          ? format("%s(dst %p, src %p, %zu bytes, %s)", api, dst, src, width, kind_name(kind))
          : format("%s(dst %p, pitch %zu, src %p, pitch %zu, %zu x %zu bytes, %s)", api, dst, dpitch, src, spitch,
                   width, height, kind_name(kind));
  if (!dst || !src) detail::die("%s: null %s", call.c_str(), dst ? "source" : "destination");
  Alloc* da = nullptr;
  Alloc* sa = nullptr;
  if (d_dev) da = device_range(call, "destination", d, dn);
  else host_range(call, "destination", d, dn);
  if (s_dev) sa = device_range(call, "source", s, sn);
  else host_range(call, "source", s, sn);
  if (d < s + sn && s < d + dn) detail::die("%s: the source and destination overlap", call.c_str());
  if (da) set_access(*da, true);
  if (sa) set_access(*sa, true);
  for (size_t r = 0; r < height; r++)
    std::memcpy(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
  if (da) set_access(*da, false);
  if (sa) set_access(*sa, false);
  return cudaSuccess;
}

cudaError_t memset_impl(const char* api, void* p, int value, size_t n) {
  if (!n) return cudaSuccess;
  Alloc* a = device_range(format("%s(%p, %d, %zu bytes)", api, p, value, n), "range", reinterpret_cast<uintptr_t>(p), n);
  set_access(*a, true);
  std::memset(p, value, n);
  set_access(*a, false);
  return cudaSuccess;
}

// --- the fault handler --------------------------------------------------------------------------

// The stack at the fault, from the faulting frame (not the handler's own frames) outward.
void print_fault_backtrace(void* ctx) {
  void* frames[32];
  const int n = backtrace(frames, 32);
  int first = 0;
#if defined(__x86_64__)
  const auto pc = reinterpret_cast<void*>(static_cast<const ucontext_t*>(ctx)->uc_mcontext.gregs[REG_RIP]);
  for (int i = 0; i < n; i++)
    if (frames[i] == pc) first = i;
#else
  (void)ctx;
#endif
  std::fprintf(stderr, "  backtrace:\n");
  print_frames(stderr, frames + first, n - first);
}

void chain(int sig, siginfo_t* si, void* ctx) {
  const struct sigaction& old = sig == SIGSEGV ? g->old_segv : g->old_bus;
  if ((old.sa_flags & SA_SIGINFO) && old.sa_sigaction) return old.sa_sigaction(sig, si, ctx);
  if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN)
    return old.sa_handler(sig);
  // Nobody else handles it: say where, then take the default action (the access runs again).
  std::fprintf(stderr, "sft CUDA emulator: %s at %p in host code, not in or near any emulated allocation\n",
               sig == SIGSEGV ? "SIGSEGV" : "SIGBUS", si->si_addr);
  print_fault_backtrace(ctx);
  signal(sig, SIG_DFL);
  if (si->si_code <= 0) raise(sig);  // sent by kill(), not a fault: nothing runs again
}

void on_fault(int sig, siginfo_t* si, void* ctx) {
  State& s = *g;
  const auto a = reinterpret_cast<uintptr_t>(si->si_addr);
  const bool kernel = s.in_kernel && pthread_equal(pthread_self(), s.launch_thread);
  if (kernel && sig == SIGSEGV) {
    // A kernel reaching device memory that is not one of its arguments: open it, run on.
    Alloc* al = find_region(s.live, a);
    if (al && al->kind == Kind::Device && !al->accessible && a >= al->data && a < al->data + al->data_len &&
        mprotect(reinterpret_cast<void*>(al->data), al->data_len, PROT_READ | PROT_WRITE) == 0) {
      al->accessible = true;
      s.touched.push_back(al);  // within the capacity reserved at begin_launch
      return;
    }
  }
  Alloc* live = find_region(s.live, a);
  Alloc* freed = live ? nullptr : find_region(s.freed, a);
  size_t smem_bytes = 0;
  uintptr_t smem_base = 0;
  const bool smem_guard = detail::in_smem_guard(a, &smem_bytes, &smem_base);
  uintptr_t sp = 0;
#if defined(__x86_64__)
  sp = uintptr_t(static_cast<const ucontext_t*>(ctx)->uc_mcontext.gregs[REG_RSP]);
#endif
  const bool stack_guard = detail::fiber_stack_overflow(a, kernel ? sp : 0);
  if (!live && !freed && !smem_guard && !stack_guard && !s.in_kernel) return chain(sig, si, ctx);

  const char* verb = "accessed";
#if defined(__x86_64__) && defined(REG_ERR)
  verb = (static_cast<const ucontext_t*>(ctx)->uc_mcontext.gregs[REG_ERR] & 2) ? "wrote" : "read";
#endif
  std::string who = "host code";
  if (kernel) {
    uint3 b, t;
    who = "kernel " + kernel_label(s.kernel_fn, s.kernel_type);
    if (detail::running_thread(&b, &t)) who += format(" (block %u,%u,%u thread %u,%u,%u)", b.x, b.y, b.z, t.x, t.y, t.z);
  }
  const void* pa = si->si_addr;
  std::string what;
  if (stack_guard) {
    what = format("%s overflowed its 256 KiB fiber stack at %p (deep recursion or a large local array)", who.c_str(), pa);
  } else if (smem_guard) {
    what = format("%s %s %p, %zu bytes past the end of its %zu bytes of dynamic shared memory (base %p)", who.c_str(),
                  verb, pa, size_t(a - smem_base - smem_bytes), smem_bytes, reinterpret_cast<void*>(smem_base));
  } else if (live && a >= live->data && a < live->data + live->data_len) {
    what = format("%s %s device memory at %p (offset %lld of %s): device memory is only reachable from kernels and "
                  "cudaMemcpy/cudaMemset, as on a GPU",
                  who.c_str(), verb, pa, offset_in(*live, a), describe(*live).c_str());
  } else if (live && a < live->data) {
    what = format("%s %s %p, %zu bytes before the start of %s (offset %lld)", who.c_str(), verb, pa,
                  size_t(live->start - a), describe(*live).c_str(), offset_in(*live, a));
  } else if (live) {
    what = format("%s %s %p, %zu bytes past the end of %s (offset %lld)", who.c_str(), verb, pa,
                  size_t(a - live->start - live->size), describe(*live).c_str(), offset_in(*live, a));
  } else if (freed) {
    what = format("%s %s freed memory at %p (use after free): offset %lld of %s", who.c_str(), verb, pa,
                  offset_in(*freed, a), describe(*freed).c_str());
  } else {
    const bool null = a < s.page;
    what = format("%s %s %p, which is in no allocation%s", who.c_str(), verb, pa, null ? " (a null pointer)" : "");
    // The nearest live allocation either side, when near enough to be the one meant.
    auto it = s.live.lower_bound(a);
    const Alloc* best = nullptr;
    if (it != s.live.end()) best = &it->second;
    if (it != s.live.begin()) {
      const Alloc* b = &std::prev(it)->second;
      if (!best || a - b->start < best->start - a) best = b;
    }
    const auto dist = [&](const Alloc* b) { return a < b->start ? b->start - a : a - b->start; };
    if (best && !null && dist(best) < (uintptr_t(1) << 30))
      what += format("; the nearest is %s, offset %lld", describe(*best).c_str(), offset_in(*best, a));
  }
  std::fprintf(stderr, "sft CUDA emulator: %s\n", what.c_str());
  print_fault_backtrace(ctx);
  std::fflush(stdout);
  std::fflush(stderr);
  signal(SIGABRT, SIG_DFL);
  std::abort();
}

void at_exit() {
  State& s = *g;
  // Not lock(): a thread still inside the emulator when another calls exit() must not hang the exit.
  const bool locked = s.mu.try_lock();
  const char* e = std::getenv("SFT_EMU_LEAK_CHECK");
  if ((!s.device_count && !s.pinned_count) || (e && !std::strcmp(e, "0"))) {
    if (locked) s.mu.unlock();
    return;
  }
  std::fflush(stdout);
  std::vector<const Alloc*> v;
  for (const auto& [base, a] : s.live) v.push_back(&a);
  std::sort(v.begin(), v.end(), [](const Alloc* a, const Alloc* b) { return a->seq < b->seq; });
  std::string list[2];
  size_t shown[2] = {0, 0};
  for (const Alloc* a : v) {
    const int k = a->kind == Kind::Device ? 0 : 1;
    if (shown[k]++ < 8)
      list[k] += format("%s#%llu (%zu bytes)", list[k].empty() ? "" : ", ", static_cast<unsigned long long>(a->seq),
                        a->size);
  }
  for (int k = 0; k < 2; k++)
    if (shown[k] > 8) list[k] += ", ...";
  std::fprintf(stderr, "sft CUDA emulator: %zu device allocation(s) leaked: %zu bytes%s%s", s.device_count, s.device_bytes,
               s.device_count ? ": " : "", list[0].c_str());
  if (s.pinned_count)
    std::fprintf(stderr, "; %zu pinned host allocation(s) leaked: %zu bytes: %s", s.pinned_count, s.pinned_bytes,
                 list[1].c_str());
  std::fprintf(stderr, "\n");
  report(stderr);
  std::fprintf(stderr, "sft CUDA emulator: exit status 3 for the leak(s) (SFT_EMU_LEAK_CHECK=0 ignores them)\n");
  std::fflush(nullptr);
  _exit(3);
}

}  // namespace

// --- launches -----------------------------------------------------------------------------------

namespace {
bool launch_error(cudaError_t e, const void* fn, const std::type_info& type, const std::string& why) {
  std::fprintf(stderr, "sft CUDA emulator: launch of kernel %s failed with %s: %s\n", kernel_label(fn, &type).c_str(),
               cudaGetErrorName(e), why.c_str());
  g->last_error = e;
  g->mu.unlock();
  return false;
}
}  // namespace

bool begin_launch(const void* fn, const std::type_info& type, dim3 grid, dim3 block, size_t smem) {
  st().mu.lock();  // held until end_launch
  ensure_altstack();
  State& s = *g;
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (!threads || threads > 1024 || block.z > 64 || !grid.x || !grid.y || !grid.z || grid.x > 0x7fffffffu ||
      grid.y > 65535 || grid.z > 65535)
    return launch_error(cudaErrorInvalidConfiguration, fn, type,
                        format("grid (%u,%u,%u), block (%u,%u,%u): outside the device's limits", grid.x, grid.y, grid.z,
                               block.x, block.y, block.z));
  if (smem > size_t(kSmemPerBlock)) {
    auto it = s.smem_optin.find(fn);
    const int allowed = it == s.smem_optin.end() ? kSmemPerBlock : it->second;
    if (smem > size_t(allowed))
      return launch_error(cudaErrorInvalidValue, fn, type,
                          format("%zu bytes of dynamic shared memory, over the %d allowed (above %d needs "
                                 "cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize), at most %d)",
                                 smem, allowed, kSmemPerBlock, kSmemOptin));
  }
  s.in_kernel = true;
  s.launch_thread = pthread_self();
  s.kernel_fn = fn;
  s.kernel_type = &type;
  s.touched.clear();
  s.touched.reserve(s.device_count + 1);  // the fault handler appends without allocating
  return true;
}

void check_kernel_pointer(int position, const volatile void* pv) {
  State& s = *g;
  const auto p = reinterpret_cast<uintptr_t>(pv);
  if (!p) return;
  Alloc* a = find_region(s.live, p);
  if (a && a->kind == Kind::Device && p >= a->start && p <= a->start + a->size) {
    if (!a->accessible) {
      set_access(*a, true);
      s.touched.push_back(a);
    }
    return;
  }
  std::string what;
  if (a && a->kind == Kind::Pinned)
    what = format("is pinned host memory %p (offset %lld of %s): kernels get device memory here, copy it explicitly",
                  reinterpret_cast<void*>(p), offset_in(*a, p), describe(*a).c_str());
  else if (a)
    what = format("points outside its allocation: %p is offset %lld of %s", reinterpret_cast<void*>(p),
                  offset_in(*a, p), describe(*a).c_str());
  else if (Alloc* f = find_region(s.freed, p))
    what = format("points into freed memory (use after free): %p is offset %lld of %s", reinterpret_cast<void*>(p),
                  offset_in(*f, p), describe(*f).c_str());
  else
    what = format("is a host pointer %p (in no live device allocation)", reinterpret_cast<void*>(p));
  detail::die("argument %d of kernel %s %s", position, kernel_label(s.kernel_fn, s.kernel_type).c_str(), what.c_str());
}

void end_launch() {
  State& s = *g;
  for (Alloc* a : s.touched) {
    uintptr_t p;
    bool after;
    if (broken_canary(*a, &p, &after)) verify(*a, kernel_label(s.kernel_fn, s.kernel_type).c_str(), nullptr);
    set_access(*a, false);
  }
  s.touched.clear();
  s.in_kernel = false;
  s.mu.unlock();
}

size_t live_device_allocations() {
  Api api;
  return api.s.device_count;
}
size_t live_device_bytes() {
  Api api;
  return api.s.device_bytes;
}
size_t live_pinned_allocations() {
  Api api;
  return api.s.pinned_count;
}
size_t device_memory_limit() {
  Api api;
  return api.s.limit;
}
size_t device_peak_bytes() {
  Api api;
  return api.s.device_peak;
}
void reset_device_peak() {
  Api api;
  api.s.device_peak = api.s.device_bytes;
}
void report_live_allocations(FILE* out) {
  Api api;
  report(out);
}

namespace {
void report(FILE* out) {
  std::vector<const Alloc*> v;
  for (const auto& [base, a] : g->live) v.push_back(&a);
  std::sort(v.begin(), v.end(), [](const Alloc* a, const Alloc* b) { return a->seq < b->seq; });
  for (const Alloc* a : v)
    std::fprintf(out, "  #%llu: %zu bytes of %s memory at %p from %s, allocated at %s\n",
                 static_cast<unsigned long long>(a->seq), a->size, a->kind == Kind::Device ? "device" : "pinned host",
                 reinterpret_cast<void*>(a->start), a->api, made_at(*a).c_str());
}
}  // namespace

namespace detail {

std::string kernel_name() {
  State* s = g;
  if (!s) return "(none)";
  return kernel_label(s->kernel_fn, s->kernel_type);
}

void die(const char* fmt, ...) {
  std::fflush(stdout);
  char buf[4096];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "sft CUDA emulator: %s\n", buf);
  std::fflush(stderr);
  std::abort();
}

}  // namespace detail
}  // namespace sft_emu

// --- the API ------------------------------------------------------------------------------------

using sft_emu::Api;

cudaError_t cudaGetLastError() {
  Api api;
  const cudaError_t e = api.s.last_error;
  api.s.last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() {
  Api api;
  return api.s.last_error;
}

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
#define SFT_EMU_NAME(x) \
  case x: return #x;
    SFT_EMU_NAME(cudaSuccess)
    SFT_EMU_NAME(cudaErrorInvalidValue)
    SFT_EMU_NAME(cudaErrorMemoryAllocation)
    SFT_EMU_NAME(cudaErrorInitializationError)
    SFT_EMU_NAME(cudaErrorCudartUnloading)
    SFT_EMU_NAME(cudaErrorInvalidConfiguration)
    SFT_EMU_NAME(cudaErrorInvalidPitchValue)
    SFT_EMU_NAME(cudaErrorInvalidSymbol)
    SFT_EMU_NAME(cudaErrorInvalidHostPointer)
    SFT_EMU_NAME(cudaErrorInvalidDevicePointer)
    SFT_EMU_NAME(cudaErrorInvalidMemcpyDirection)
    SFT_EMU_NAME(cudaErrorInsufficientDriver)
    SFT_EMU_NAME(cudaErrorInvalidDeviceFunction)
    SFT_EMU_NAME(cudaErrorNoDevice)
    SFT_EMU_NAME(cudaErrorInvalidDevice)
    SFT_EMU_NAME(cudaErrorInvalidResourceHandle)
    SFT_EMU_NAME(cudaErrorNotReady)
    SFT_EMU_NAME(cudaErrorIllegalAddress)
    SFT_EMU_NAME(cudaErrorLaunchOutOfResources)
    SFT_EMU_NAME(cudaErrorLaunchTimeout)
    SFT_EMU_NAME(cudaErrorMisalignedAddress)
    SFT_EMU_NAME(cudaErrorLaunchFailure)
    SFT_EMU_NAME(cudaErrorNotPermitted)
    SFT_EMU_NAME(cudaErrorNotSupported)
    SFT_EMU_NAME(cudaErrorUnknown)
#undef SFT_EMU_NAME
  }
  return "unrecognized error code";
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {  // the runtime's own strings
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorCudartUnloading: return "driver shutting down";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidPitchValue: return "invalid pitch argument";
    case cudaErrorInvalidSymbol: return "invalid device symbol";
    case cudaErrorInvalidHostPointer: return "invalid host pointer";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchTimeout: return "the launch timed out and was terminated";
    case cudaErrorMisalignedAddress: return "misaligned address";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotPermitted: return "operation not permitted";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorUnknown: return "unknown error";
  }
  return "unrecognized error code";
}

cudaError_t cudaMalloc(void** p, size_t n) {
  Api api;
  if (!p) return sft_emu::record(cudaErrorInvalidValue);
  return sft_emu::alloc_impl(sft_emu::Kind::Device, n, "cudaMalloc", p);
}
cudaError_t cudaMallocAsync(void** p, size_t n, cudaStream_t stream) {
  Api api;
  sft_emu::check_stream("cudaMallocAsync", stream);
  if (!p) return sft_emu::record(cudaErrorInvalidValue);
  return sft_emu::alloc_impl(sft_emu::Kind::Device, n, "cudaMallocAsync", p);
}
cudaError_t cudaFree(void* p) {
  Api api;
  return sft_emu::free_impl(sft_emu::Kind::Device, p, "cudaFree");
}
cudaError_t cudaFreeAsync(void* p, cudaStream_t stream) {
  Api api;
  sft_emu::check_stream("cudaFreeAsync", stream);
  return sft_emu::free_impl(sft_emu::Kind::Device, p, "cudaFreeAsync");
}
cudaError_t cudaMallocHost(void** p, size_t n) {
  Api api;
  if (!p) return sft_emu::record(cudaErrorInvalidValue);
  return sft_emu::alloc_impl(sft_emu::Kind::Pinned, n, "cudaMallocHost", p);
}
cudaError_t cudaHostAlloc(void** p, size_t n, unsigned int flags) {
  Api api;
  if (!p || (flags & ~0x7u)) return sft_emu::record(cudaErrorInvalidValue);
  return sft_emu::alloc_impl(sft_emu::Kind::Pinned, n, "cudaHostAlloc", p);
}
cudaError_t cudaFreeHost(void* p) {
  Api api;
  return sft_emu::free_impl(sft_emu::Kind::Pinned, p, "cudaFreeHost");
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  Api api;
  if (!free_bytes || !total_bytes) return sft_emu::record(cudaErrorInvalidValue);
  *total_bytes = api.s.limit;
  *free_bytes = api.s.limit - api.s.device_bytes;
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  Api api;
  return sft_emu::copy_impl("cudaMemcpy", dst, count, src, count, count, 1, kind);
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream) {
  Api api;
  sft_emu::check_stream("cudaMemcpyAsync", stream);
  return sft_emu::copy_impl("cudaMemcpyAsync", dst, count, src, count, count, 1, kind);
}
cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                         cudaMemcpyKind kind) {
  Api api;
  return sft_emu::copy_impl("cudaMemcpy2D", dst, dpitch, src, spitch, width, height, kind);
}
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind kind, cudaStream_t stream) {
  Api api;
  sft_emu::check_stream("cudaMemcpy2DAsync", stream);
  return sft_emu::copy_impl("cudaMemcpy2DAsync", dst, dpitch, src, spitch, width, height, kind);
}
cudaError_t cudaMemset(void* p, int value, size_t count) {
  Api api;
  return sft_emu::memset_impl("cudaMemset", p, value, count);
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t count, cudaStream_t stream) {
  Api api;
  sft_emu::check_stream("cudaMemsetAsync", stream);
  return sft_emu::memset_impl("cudaMemsetAsync", p, value, count);
}

cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int device) {
  Api api;
  if (!pool) return sft_emu::record(cudaErrorInvalidValue);
  if (device != 0) return sft_emu::record(cudaErrorInvalidDevice);
  *pool = &api.s.pool;
  return cudaSuccess;
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value) {
  Api api;
  if (pool != &api.s.pool || !value) return sft_emu::record(cudaErrorInvalidValue);
  switch (attr) {
    case cudaMemPoolAttrReleaseThreshold: pool->release_threshold = *static_cast<uint64_t*>(value); return cudaSuccess;
    case cudaMemPoolReuseFollowEventDependencies:
    case cudaMemPoolReuseAllowOpportunistic:
    case cudaMemPoolReuseAllowInternalDependencies: pool->reuse[attr] = *static_cast<int*>(value); return cudaSuccess;
    case cudaMemPoolAttrReservedMemHigh:
    case cudaMemPoolAttrUsedMemHigh:  // only resettable to 0
      if (*static_cast<uint64_t*>(value) != 0) return sft_emu::record(cudaErrorInvalidValue);
      api.s.pool_high = api.s.pool_used;
      return cudaSuccess;
    default: return sft_emu::record(cudaErrorInvalidValue);
  }
}
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value) {
  Api api;
  if (pool != &api.s.pool || !value) return sft_emu::record(cudaErrorInvalidValue);
  switch (attr) {
    case cudaMemPoolAttrReleaseThreshold: *static_cast<uint64_t*>(value) = pool->release_threshold; return cudaSuccess;
    case cudaMemPoolReuseFollowEventDependencies:
    case cudaMemPoolReuseAllowOpportunistic:
    case cudaMemPoolReuseAllowInternalDependencies: *static_cast<int*>(value) = pool->reuse[attr]; return cudaSuccess;
    case cudaMemPoolAttrReservedMemCurrent:
    case cudaMemPoolAttrUsedMemCurrent: *static_cast<uint64_t*>(value) = api.s.pool_used; return cudaSuccess;
    case cudaMemPoolAttrReservedMemHigh:
    case cudaMemPoolAttrUsedMemHigh: *static_cast<uint64_t*>(value) = api.s.pool_high; return cudaSuccess;
  }
  return sft_emu::record(cudaErrorInvalidValue);
}
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t pool, size_t) {
  Api api;
  return pool == &api.s.pool ? cudaSuccess : sft_emu::record(cudaErrorInvalidValue);
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  Api api;
  if (!stream || (flags & ~1u)) return sft_emu::record(cudaErrorInvalidValue);
  *stream = new CUstream_st{flags};
  api.s.streams.insert(*stream);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  Api api;
  if (!stream || stream == cudaStreamLegacy || stream == cudaStreamPerThread)
    return sft_emu::record(cudaErrorInvalidResourceHandle);
  sft_emu::check_stream("cudaStreamDestroy", stream);
  api.s.streams.erase(stream);
  delete stream;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  Api api;
  sft_emu::check_stream("cudaStreamSynchronize", stream);
  sft_emu::verify_all(false, "cudaStreamSynchronize");
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t stream) {
  Api api;
  sft_emu::check_stream("cudaStreamQuery", stream);
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags) {
  Api api;
  sft_emu::check_stream("cudaStreamWaitEvent", stream);
  sft_emu::check_event("cudaStreamWaitEvent", event);
  return flags & ~1u ? sft_emu::record(cudaErrorInvalidValue) : cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  Api api;
  sft_emu::verify_all(true, "cudaDeviceSynchronize");
  return cudaSuccess;
}

// Events: wall-clock time on the host (the emulator's "device" is the calling thread).
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int flags) {
  Api api;
  if (!e || (flags & ~0x7u)) return sft_emu::record(cudaErrorInvalidValue);
  *e = new CUevent_st();
  (*e)->flags = flags;
  api.s.events.insert(*e);
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  Api api;
  sft_emu::check_event("cudaEventDestroy", e);
  api.s.events.erase(e);
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t stream) {
  Api api;
  sft_emu::check_event("cudaEventRecord", e);
  sft_emu::check_stream("cudaEventRecord", stream);
  e->t = std::chrono::steady_clock::now();
  e->recorded = true;
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
  Api api;
  sft_emu::check_event("cudaEventQuery", e);
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  Api api;
  sft_emu::check_event("cudaEventSynchronize", e);
  sft_emu::verify_all(false, "cudaEventSynchronize");
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  Api api;
  sft_emu::check_event("cudaEventElapsedTime", start);
  sft_emu::check_event("cudaEventElapsedTime", end);
  if (!ms) return sft_emu::record(cudaErrorInvalidValue);
  if (((start->flags | end->flags) & cudaEventDisableTiming) || !start->recorded || !end->recorded)
    return sft_emu::record(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(end->t - start->t).count();
  return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return cudaErrorInvalidValue;
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  if (!device) return cudaErrorInvalidValue;
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  Api api;
  return device == 0 ? cudaSuccess : sft_emu::record(cudaErrorInvalidDevice);
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  Api api;
  if (!p) return sft_emu::record(cudaErrorInvalidValue);
  if (device != 0) return sft_emu::record(cudaErrorInvalidDevice);
  std::memset(p, 0, sizeof(*p));
  std::strcpy(p->name, "CPU emulation (test/cuda/emu)");
  p->totalGlobalMem = api.s.limit;
  p->sharedMemPerBlock = sft_emu::kSmemPerBlock;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 0x7fffffff;
  p->maxGridSize[1] = p->maxGridSize[2] = 65535;
  p->major = sft_emu::kCcMajor;
  p->minor = sft_emu::kCcMinor;
  p->multiProcessorCount = sft_emu::kMultiProcessors;
  p->l2CacheSize = 6 << 20;
  p->maxThreadsPerMultiProcessor = 1536;
  p->sharedMemPerMultiprocessor = sft_emu::kSmemPerSM;
  p->sharedMemPerBlockOptin = sft_emu::kSmemOptin;
  p->unifiedAddressing = 1;
  p->memoryPoolsSupported = 1;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  Api api;
  if (!value) return sft_emu::record(cudaErrorInvalidValue);
  if (device != 0) return sft_emu::record(cudaErrorInvalidDevice);
  cudaDeviceProp p;
  cudaGetDeviceProperties(&p, 0);
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxBlockDimX: *value = p.maxThreadsDim[0]; break;
    case cudaDevAttrMaxBlockDimY: *value = p.maxThreadsDim[1]; break;
    case cudaDevAttrMaxBlockDimZ: *value = p.maxThreadsDim[2]; break;
    case cudaDevAttrMaxGridDimX: *value = p.maxGridSize[0]; break;
    case cudaDevAttrMaxGridDimY: *value = p.maxGridSize[1]; break;
    case cudaDevAttrMaxGridDimZ: *value = p.maxGridSize[2]; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = int(p.sharedMemPerBlock); break;
    case cudaDevAttrWarpSize: *value = p.warpSize; break;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrL2CacheSize: *value = p.l2CacheSize; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = p.maxThreadsPerMultiProcessor; break;
    case cudaDevAttrUnifiedAddressing: *value = p.unifiedAddressing; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = int(p.sharedMemPerMultiprocessor); break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = int(p.sharedMemPerBlockOptin); break;
    case cudaDevAttrMemoryPoolsSupported: *value = p.memoryPoolsSupported; break;
    default: return sft_emu::record(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* version) {
  if (!version) return cudaErrorInvalidValue;
  *version = sft_emu::kVersion;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* version) {
  if (!version) return cudaErrorInvalidValue;
  *version = sft_emu::kVersion;
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  Api api;
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > sft_emu::kSmemOptin)
    return sft_emu::record(cudaErrorInvalidValue);
  api.s.smem_optin[func] = value;
  return cudaSuccess;
}
