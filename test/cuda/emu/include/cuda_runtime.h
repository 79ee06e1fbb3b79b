// CPU emulation of the part of the CUDA runtime the backend and its tests use. Kernels compile as
// plain C++ (SFT_CUDA_EMULATE, see native/cuda/common.cuh) and run block after block, each block's
// threads as fibers on the calling OS thread, switching at __syncthreads and warp shuffles. Every
// call completes at once: streams, events and the *Async calls are synchronous (emu.cpp, runtime.cpp).
//
// What it checks, so that a bug shows in CI instead of on the first GPU run:
//  - kernel logic: indexing, masking, tiling, reductions, barrier placement (a fiber runs until its
//    next barrier, so a read that misses a __syncthreads sees stale data), shuffles of exited lanes;
//  - the warp-level matrix instructions (emu_mma.h: mma.sync m16n8k16 bf16, ldmatrix .x4/.trans,
//    cp.async): PTX ISA fragment layouts, all 32 lanes at the same instruction, ldmatrix rows
//    16-byte aligned in shared memory, cp.async data unreadable (NaN) until the thread waits for it;
//  - device memory (runtime.cpp): every cudaMalloc/cudaMallocAsync/cudaMallocHost/cudaHostAlloc is
//    tracked, has its own mapping between PROT_NONE guard pages, ends (rounded up to 256 bytes) on
//    the trailing guard page, starts 256-aligned, and is filled with 0xFF (NaN as fp32 and bf16, so
//    a buffer nobody zeroed poisons the result; SFT_EMU_POISON=00 picks another byte, so that
//    comparing two runs also shows uninitialised reads whose NaN got lost, e.g. in fmaxf). The
//    bytes between its size and the 256 rounding,
//    and before its start on its first page, hold a canary verified after every launch, at free
//    and at synchronisation. Accesses into the guard pages, into freed memory (kept PROT_NONE for a
//    while), or past a launch's dynamic shared memory fault; the SIGSEGV handler names the address,
//    the nearest allocation, the kernel, block and thread, then aborts;
//  - device memory is PROT_NONE outside kernels and the emulator's own copies: host code that
//    dereferences a device pointer faults and is reported, as it would crash on a GPU;
//  - kernel arguments: every pointer argument is null or inside (or one past) a live device
//    allocation; host, pinned host, freed and out-of-range pointers fail naming kernel and argument;
//  - copies and memsets: the ranges lie inside one live allocation of the kind the copy names
//    (cudaMemcpyDefault infers it), no overlap; bad frees (unknown, double, wrong API) fail;
//  - a device memory limit (SFT_EMU_DEVICE_MEMORY, default 4G): past it cudaMalloc returns
//    cudaErrorMemoryAllocation, as a full GPU does;
//  - leaks: device or pinned allocations live at exit are listed and the process exits with 3
//    (SFT_EMU_LEAK_CHECK=0 turns that off);
//  - streams and events: using one after cudaStreamDestroy/cudaEventDestroy (or one never created)
//    fails; cudaEventElapsedTime follows the GPU's rules (both recorded, timing not disabled);
//  - launch configurations: block and grid limits, and dynamic shared memory over 48 KiB without
//    cudaFuncSetAttribute or over the device's opt-in limit fail the launch (cudaGetLastError), as
//    on a GPU. The emulated device has the tightest limits of the architectures the project builds
//    for (sm_86/sm_89: 99 KiB opt-in shared memory).
// What it cannot check: timing and performance, races between blocks or between streams (work runs
// in issue order, so a missing cudaStreamWaitEvent goes unnoticed), occupancy, static __shared__
// sizes, register limits, the real math intrinsics (here: libm), a kernel's pointer arguments hidden
// inside a struct, a kernel touching pinned host memory it reached indirectly, out-of-bounds reads
// of the few bytes of slack before the 256 rounding (they read NaN canaries, writes are caught),
// accesses that stay inside one allocation (one sub-buffer of a scratch block running into the
// next), and leaked streams or events. Messages name kernels from the binary's ELF symbol table,
// so keep it unstripped. A GPU run of the same test (sft_cuda_tests) is still required.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <type_traits>
#include <typeinfo>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __constant__

// The version this emulation follows (the APIs below have the signatures of CUDA 12).
#define CUDART_VERSION 12000

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The values of driver_types.h, so that logs read as on a GPU.
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorCudartUnloading = 4,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidPitchValue = 12,
  cudaErrorInvalidSymbol = 13,
  cudaErrorInvalidHostPointer = 16,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorInsufficientDriver = 35,
  cudaErrorInvalidDeviceFunction = 98,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorLaunchTimeout = 702,
  cudaErrorMisalignedAddress = 716,
  cudaErrorLaunchFailure = 719,
  cudaErrorNotPermitted = 800,
  cudaErrorNotSupported = 801,
  cudaErrorUnknown = 999,
};
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxBlockDimX = 2,
  cudaDevAttrMaxBlockDimY = 3,
  cudaDevAttrMaxBlockDimZ = 4,
  cudaDevAttrMaxGridDimX = 5,
  cudaDevAttrMaxGridDimY = 6,
  cudaDevAttrMaxGridDimZ = 7,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrWarpSize = 10,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrL2CacheSize = 38,
  cudaDevAttrMaxThreadsPerMultiProcessor = 39,
  cudaDevAttrUnifiedAddressing = 41,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
  cudaDevAttrMaxSharedMemoryPerMultiprocessor = 81,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
  cudaDevAttrMemoryPoolsSupported = 115,
};
enum cudaMemPoolAttr {
  cudaMemPoolReuseFollowEventDependencies = 0x1,
  cudaMemPoolReuseAllowOpportunistic = 0x2,
  cudaMemPoolReuseAllowInternalDependencies = 0x3,
  cudaMemPoolAttrReleaseThreshold = 0x4,
  cudaMemPoolAttrReservedMemCurrent = 0x5,
  cudaMemPoolAttrReservedMemHigh = 0x6,
  cudaMemPoolAttrUsedMemCurrent = 0x7,
  cudaMemPoolAttrUsedMemHigh = 0x8,
};
typedef struct CUstream_st* cudaStream_t;
typedef struct CUevent_st* cudaEvent_t;
typedef struct CUmemPoolHandle_st* cudaMemPool_t;

#define cudaHostAllocDefault 0x00
#define cudaHostAllocPortable 0x01
#define cudaHostAllocMapped 0x02
#define cudaHostAllocWriteCombined 0x04
#define cudaStreamDefault 0x00
#define cudaStreamNonBlocking 0x01
#define cudaStreamLegacy ((cudaStream_t)0x1)
#define cudaStreamPerThread ((cudaStream_t)0x2)
#define cudaEventDefault 0x00
#define cudaEventBlockingSync 0x01
#define cudaEventDisableTiming 0x02
#define cudaEventInterprocess 0x04

// The fields of the real struct that the code here reads (same names).
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  int warpSize;
  int maxThreadsPerBlock;
  int maxThreadsDim[3];
  int maxGridSize[3];
  int major, minor;
  int multiProcessorCount;
  int l2CacheSize;
  int maxThreadsPerMultiProcessor;
  size_t sharedMemPerMultiprocessor;
  size_t sharedMemPerBlockOptin;
  int unifiedAddressing;
  int memoryPoolsSupported;
};

namespace sft_emu {

// The running fiber's thread index and the running block's coordinates.
const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
void* dynamic_smem();
void syncthreads();
// Every live lane of the calling warp publishes v, then reads lane src's value.
uint64_t exchange(uint64_t v, int src_lane);

// The warp-wide matrix instructions (mma.sync, ldmatrix: emu_mma.h). Every lane of the calling
// warp calls this with its own buffer and the instruction's id `op`; when the last lane arrives,
// fn runs once with the 32 buffers in lane order (it reads every lane's operands and writes every
// lane's results), then the lanes go on. As on a GPU, where such an instruction is undefined
// otherwise, it fails when the warp is partial, a lane of it has exited, or its lanes wait at
// different instructions.
void warp_collective(int op, void* buf, void (*fn)(void* const* lanes));
// Stops the program with `what`, naming the running kernel and block.
[[noreturn]] void kernel_fail(const char* what);
// Whether [p, p + bytes) lies inside the running launch's dynamic shared memory.
bool in_dynamic_smem(const void* p, size_t bytes);
// cp.async (emu_mma.h): the copy of `bytes` from src to dst (dynamic shared memory), of which only
// the first src_bytes are read (the rest is zero-filled), is queued on the calling thread. Its
// destination reads as NaN (0xFF bytes) from issue until the copy is done, which is when the
// thread waits for its group (cp_async_wait), so a read that misses the wait, or a refill that
// misses the barrier after the last read, gives NaN instead of silently passing. commit closes the
// thread's open group; wait(n) completes all but the n most recent committed groups. Copies still
// queued when a thread exits complete then.
void cp_async(void* dst, const void* src, size_t bytes, size_t src_bytes);
void cp_async_commit();
void cp_async_wait(int pending);

// Runs body for every block of the grid, block threads as fibers.
void run_grid(dim3 grid, dim3 block, size_t smem, const std::function<void()>& body);

// A launch, as Launch runs it (runtime.cpp): begin_launch validates the configuration (false: the
// launch failed with an error for cudaGetLastError, as on a GPU, and does not run) and records the
// kernel for messages; check_kernel_pointer checks one pointer argument (1-based position) and
// opens its allocation to the kernel; end_launch verifies the canaries of every allocation the
// kernel could reach and closes them again.
bool begin_launch(const void* fn, const std::type_info& type, dim3 grid, dim3 block, size_t smem);
void check_kernel_pointer(int position, const volatile void* p);
void end_launch();

// The address of a kernel given as a function pointer (names it in messages); null otherwise.
template <typename K>
const void* kernel_address(K k) {
  if constexpr (std::is_pointer_v<K> && std::is_function_v<std::remove_pointer_t<K>>)
    return reinterpret_cast<const void*>(k);
  else
    return nullptr;
}

template <typename A>
inline void check_kernel_argument(int position, const A& a) {
  // Pointers to objects only: what a kernel dereferences. Integers, floats and std::nullptr_t pass.
  if constexpr (std::is_pointer_v<A> && std::is_object_v<std::remove_pointer_t<A>>)
    check_kernel_pointer(position, static_cast<const volatile void*>(a));
}

template <typename K>
struct Launch {
  dim3 grid, block;
  size_t smem;
  K kernel;
  template <typename... A>
  void operator()(A... a) const {
    if (!begin_launch(kernel_address(kernel), typeid(K), grid, block, smem)) return;
    int position = 0;
    (check_kernel_argument(++position, a), ...);
    K k = kernel;
    run_grid(grid, block, smem, [&] { k(a...); });
    end_launch();
  }
};
template <typename G, typename B, typename K>
Launch<K> launch(G grid, B block, size_t smem, K kernel) {
  return Launch<K>{dim3(grid), dim3(block), smem, kernel};
}

// Allocation bookkeeping, for tests: live device allocations and their requested bytes, live
// pinned host allocations, and a listing of every live allocation (sequence number, size, the API
// that made it, and where it was made) to `out`.
size_t live_device_allocations();
size_t live_device_bytes();
size_t live_pinned_allocations();
void report_live_allocations(FILE* out);
// The emulated device's memory: SFT_EMU_DEVICE_MEMORY (bytes; suffixes K, M, G, T), default 4 GiB.
size_t device_memory_limit();
// The most device bytes live at once since the last reset_device_peak() (or the start): what a
// load's transient peak was.
size_t device_peak_bytes();
void reset_device_peak();

}  // namespace sft_emu

#define threadIdx (::sft_emu::thread_idx())
#define blockIdx (::sft_emu::block_idx())
#define blockDim (::sft_emu::block_dim())
#define gridDim (::sft_emu::grid_dim())

inline void __syncthreads() { ::sft_emu::syncthreads(); }

template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int lane_mask) {
  static_assert(sizeof(T) <= 8, "shuffle of more than 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  const int lane = int((threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y) & 31);
  bits = ::sft_emu::exchange(bits, lane ^ lane_mask);
  T r;
  std::memcpy(&r, &bits, sizeof(T));
  return r;
}

inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }

// --- the runtime API (runtime.cpp), CUDA's signatures ---------------------------------------------

// Errors: the last failure recorded (an allocation past the limit, a failed launch, a bad argument
// that a GPU also reports); cudaGetLastError returns and clears it, cudaPeekAtLastError only returns
// it. None is sticky: what would be sticky on a GPU (a fault in a kernel) aborts here.
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorName(cudaError_t e);
const char* cudaGetErrorString(cudaError_t e);

// Device memory and pinned host memory.
cudaError_t cudaMalloc(void** p, size_t n);
cudaError_t cudaMallocAsync(void** p, size_t n, cudaStream_t stream);
cudaError_t cudaFree(void* p);
cudaError_t cudaFreeAsync(void* p, cudaStream_t stream);
cudaError_t cudaMallocHost(void** p, size_t n);
cudaError_t cudaHostAlloc(void** p, size_t n, unsigned int flags);
cudaError_t cudaFreeHost(void* p);
template <typename T>
inline cudaError_t cudaMalloc(T** p, size_t n) {
  return cudaMalloc(reinterpret_cast<void**>(p), n);
}
template <typename T>
inline cudaError_t cudaMallocAsync(T** p, size_t n, cudaStream_t stream) {
  return cudaMallocAsync(reinterpret_cast<void**>(p), n, stream);
}
template <typename T>
inline cudaError_t cudaMallocHost(T** p, size_t n, unsigned int flags = 0) {
  return flags ? cudaHostAlloc(reinterpret_cast<void**>(p), n, flags) : cudaMallocHost(reinterpret_cast<void**>(p), n);
}
template <typename T>
inline cudaError_t cudaHostAlloc(T** p, size_t n, unsigned int flags) {
  return cudaHostAlloc(reinterpret_cast<void**>(p), n, flags);
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);

// Copies and memsets.
cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream = 0);
cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                         cudaMemcpyKind kind);
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width,
                              size_t height, cudaMemcpyKind kind, cudaStream_t stream = 0);
cudaError_t cudaMemset(void* p, int value, size_t count);
cudaError_t cudaMemsetAsync(void* p, int value, size_t count, cudaStream_t stream = 0);

// Memory pools: one default pool whose attributes are kept (the release threshold changes nothing).
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int device);
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value);
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value);
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t pool, size_t min_bytes_to_keep);

// Streams (work completes when issued, so they order nothing) and events.
cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamQuery(cudaStream_t stream);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags = 0);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t stream = 0);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

// The device: one, "CPU emulation (test/cuda/emu)".
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaDriverGetVersion(int* version);
cudaError_t cudaRuntimeGetVersion(int* version);

// Kernels: the opt-in dynamic shared memory limit per kernel, checked at launch.
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value);
template <typename F>
inline cudaError_t cudaFuncSetAttribute(F* func, cudaFuncAttribute attr, int value) {
  return cudaFuncSetAttribute(::sft_emu::kernel_address(func), attr, value);
}
