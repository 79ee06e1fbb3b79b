// What the emulator's scheduler (emu.cpp) and its runtime (runtime.cpp) tell each other: the fault
// handler in runtime.cpp names the block and thread that faulted and recognises the scheduler's
// guard pages; the scheduler's own failures name the kernel that was running.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "cuda_runtime.h"

namespace sft_emu::detail {

// emu.cpp. The running fiber's block and thread; false outside a kernel.
bool running_thread(uint3* block, uint3* thread);
// emu.cpp. Whether a fault at `a` with stack pointer `sp` (0: unknown) is a kernel's stack
// overflow: `a` in the guard below a fiber's stack, or the running fiber's sp at its bottom.
bool fiber_stack_overflow(uintptr_t a, uintptr_t sp);
// emu.cpp. Whether `a` lies in the guard page after the running launch's dynamic shared memory;
// *bytes is its size, *base its start.
bool in_smem_guard(uintptr_t a, size_t* bytes, uintptr_t* base);

// runtime.cpp. The running (or, outside a launch, the last) kernel's name, e.g.
// "rmsnorm_fwd_kernel<float>".
std::string kernel_name();
// runtime.cpp. Prints the message (prefixed "sft CUDA emulator: "), flushes, aborts.
[[noreturn]] void die(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace sft_emu::detail
