#include "cpu/isa.h"

#include <unistd.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <stdexcept>

namespace sft::cpu {
namespace {

const Kernels* table_of(Isa isa) {
  switch (isa) {
    case Isa::Portable: return portable_kernels();
    case Isa::Avx2: return avx2_kernels();
    case Isa::Avx512: return avx512_kernels();
    case Isa::Avx512Bf16: return avx512bf16_kernels();
    case Isa::Amx: return amx_kernels();
  }
  return nullptr;
}

#if defined(__x86_64__) || defined(__i386__)
// CPUID leaf 7 sub-leaf `sub`, register EAX (0), EBX (1), ECX (2) or EDX (3); 0 where the leaf is absent.
uint32_t cpuid7(unsigned sub, int reg) {
  unsigned r[4] = {0, 0, 0, 0};
  if (__get_cpuid_max(0, nullptr) < 7) return 0;
  __cpuid_count(7, sub, r[0], r[1], r[2], r[3]);
  return r[reg];
}
#endif

bool cpu_has(Isa isa) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  switch (isa) {
    case Isa::Portable: return true;
    // __builtin_cpu_supports also checks that the OS saves the ymm/zmm state (XCR0).
    case Isa::Avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    case Isa::Avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    // AVX512_BF16: CPUID.(EAX=7, ECX=1):EAX bit 5; the zmm state is the one AVX-512 needs.
    case Isa::Avx512Bf16: return cpu_has(Isa::Avx512) && (cpuid7(1, 0) >> 5 & 1);
    case Isa::Amx: return cpu_has(Isa::Avx512Bf16) && amx_permitted();  // amx_permitted checks CPUID first
  }
  return false;
#else
  return isa == Isa::Portable;
#endif
}

std::string available_list() {
  std::string s;
  for (Isa i : kAllIsas)
    if (isa_available(i)) s += std::string(s.empty() ? "" : ", ") + isa_name(i);
  return s;
}

Isa choose() {
  const char* env = std::getenv("SFT_CPU_ISA");
  if (env && *env) {
    const std::string want = env;
    for (Isa i : kAllIsas) {
      if (want != isa_name(i)) continue;
      if (!isa_available(i))
        throw std::runtime_error("SFT_CPU_ISA=" + want + ": this CPU or build cannot run it; available: " + available_list());
      return i;
    }
    throw std::runtime_error("SFT_CPU_ISA=" + want + " is not one of portable, avx2, avx512, avx512bf16, amx (available here: " +
                             available_list() + ")");
  }
  Isa best = Isa::Portable;
  for (Isa i : kAllIsas)
    if (isa_available(i)) best = i;
  return best;
}

struct State {
  std::atomic<Isa> isa;
  std::atomic<const Kernels*> k;
  State() {
    const Isa i = choose();
    isa = i;
    k = table_of(i);
  }
};

State& state() {
  static State s;
  return s;
}

int64_t sys_cache(int name, const char* sysfs_level, int64_t fallback) {
  long v = sysconf(name);
  if (v > 0) return v;
  // sysconf has no answer on some systems (musl, some VMs): /sys names each cache's level and type.
  for (int idx = 0; idx < 8; idx++) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(idx) + "/";
    std::ifstream lv(dir + "level"), ty(dir + "type"), sz(dir + "size");
    std::string level, type, size;
    if (!(lv >> level) || !(ty >> type) || !(sz >> size)) break;
    if (level != sysfs_level || type == "Instruction") continue;
    int64_t n = std::atoll(size.c_str());
    if (!size.empty() && (size.back() == 'K')) n <<= 10;
    if (!size.empty() && (size.back() == 'M')) n <<= 20;
    if (n > 0) return n;
  }
  return fallback;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Portable: return "portable";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Avx512Bf16: return "avx512bf16";
    case Isa::Amx: return "amx";
  }
  return "?";
}

bool isa_available(Isa isa) { return table_of(isa) && cpu_has(isa); }
Isa default_isa() { return choose(); }
const Kernels& kernels() { return *state().k.load(std::memory_order_relaxed); }
Isa current_isa() { return state().isa.load(); }

void set_isa(Isa isa) {
  if (!isa_available(isa)) throw std::runtime_error(std::string("CPU kernels ") + isa_name(isa) + " are not available here");
  state().isa = isa;
  state().k = table_of(isa);
}

void check_baseline() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  std::string missing;
  auto need = [&](bool ok, const char* name) {
    if (!ok) missing += std::string(missing.empty() ? "" : ", ") + name;
  };
#if defined(__AVX2__)
  need(__builtin_cpu_supports("avx2"), "avx2");
#endif
#if defined(__FMA__)
  need(__builtin_cpu_supports("fma"), "fma");
#endif
#if defined(__AVX512F__)
  need(__builtin_cpu_supports("avx512f"), "avx512f");
#endif
  if (!missing.empty())
    throw std::runtime_error("this sft build was compiled for CPUs with " + missing +
                             ", which this CPU lacks; rebuild it here (SFT_CPU_BASELINE=x86-64 npm rebuild)");
#endif
}

bool cpu_has_amx() {
#if defined(__x86_64__) || defined(__i386__)
  const uint32_t edx = cpuid7(0, 3);
  return (edx >> 22 & 1) && (edx >> 24 & 1);  // AMX-BF16, AMX-TILE
#else
  return false;
#endif
}

bool amx_permitted() {
#if defined(__linux__) && defined(__x86_64__)
  // Asked once per process; the answer holds for every thread (the pool's included). A kernel
  // without the request (before 5.16) refuses it: the amx path is then not offered.
  static const bool ok = [] {
    if (!cpu_has_amx()) return false;
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
#else
  return false;
#endif
}

const CacheSizes& cache_sizes() {
  static const CacheSizes c = {sys_cache(_SC_LEVEL1_DCACHE_SIZE, "1", 32 << 10), sys_cache(_SC_LEVEL2_CACHE_SIZE, "2", 1 << 20),
                               sys_cache(_SC_LEVEL3_CACHE_SIZE, "3", 8 << 20)};
  return c;
}

}  // namespace sft::cpu
