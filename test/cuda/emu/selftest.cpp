// Proves that each check of the CPU emulator fires: one mode per bug, each a small program that
// makes exactly that mistake (test/cuda/cuda.test.ts runs every mode and matches the message).
//
//   sft_cuda_emu_selftest MODE
//
// ok                a correct program using the whole emulated API: exits 0, prints "selftest ok"
// host-pointer      a host pointer as a kernel argument                      -> aborts, names the argument
// pinned-arg        pinned host memory as a kernel argument                  -> aborts
// freed-arg         a freed device pointer as a kernel argument             -> aborts
// oob-read          a kernel reads one element past a 256-byte buffer       -> faults on the guard page
// oob-write         a kernel writes one element past a 400-byte buffer      -> canary broken after the launch
// underflow         a kernel writes the element before a buffer's start     -> canary broken after the launch
// use-after-free    a kernel reads a freed buffer through a pointer table   -> faults, "use after free"
// double-free       cudaFree twice                                           -> aborts
// bad-free          cudaFree of a host pointer                               -> aborts
// free-pinned       cudaFree of cudaMallocHost memory                        -> aborts
// leak              allocations live at exit                                 -> leak report, exit status 3
// uninitialized     accumulating into a buffer nobody zeroed                 -> prints the NaN result, exits 0
// bad-memcpy        cudaMemcpy of 800 bytes into a 400-byte buffer           -> aborts
// bad-memcpy-kind   cudaMemcpyDeviceToHost from host memory                  -> aborts
// bad-stream        cudaMemcpyAsync on a destroyed stream                    -> aborts
// host-access       host code dereferences a device pointer                  -> faults
// smem-overflow     a kernel writes past its dynamic shared memory           -> faults
// smem-limit        64 KiB of dynamic shared memory without the attribute    -> launch error, exits 0
// oom               cudaMalloc past SFT_EMU_DEVICE_MEMORY (64M here)         -> cudaErrorMemoryAllocation, exits 0
// mma-exited-lane   lane 5 returns before a warp's mma.sync                  -> aborts, names the lane
// mma-divergent     half a warp at ldmatrix, the other half at mma.sync      -> aborts
// ldmatrix-global   ldmatrix from a global-memory address                    -> aborts
// cp-async-no-wait  reads shared memory a cp.async fills without waiting     -> prints the NaN it read, exits 0
#include <cuda_runtime.h>
#include <sys/resource.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/mma.cuh"

using sft::cuda::bf16;
using sft::cuda::grid_for;

#define CHECK(x)                                                                               \
  do {                                                                                         \
    const cudaError_t e_ = (x);                                                                \
    if (e_ != cudaSuccess) {                                                                   \
      std::fprintf(stderr, "selftest: %s failed: %s (line %d)\n", #x, cudaGetErrorName(e_), __LINE__); \
      std::exit(1);                                                                            \
    }                                                                                          \
  } while (0)
#define EXPECT(c)                                                              \
  do {                                                                         \
    if (!(c)) {                                                                \
      std::fprintf(stderr, "selftest: expected %s (line %d)\n", #c, __LINE__); \
      std::exit(1);                                                            \
    }                                                                          \
  } while (0)

namespace {

__global__ void axpy_kernel(float* y, const float* x, float a, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) y[i] += a * x[i];
}
// Reads x[i + 1]: the last thread reads one past the end.
__global__ void shift_read_kernel(float* out, const float* x, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] = x[i + 1];
}
// i <= n: one element too many.
__global__ void write_upto_kernel(float* y, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i <= n) y[i] = 1.f;
}
// y[i - 1]: thread 0 writes before the start.
__global__ void write_shifted_kernel(float* y, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) y[i - 1] = 1.f;
}
// out[i] = table[0][i]: the buffer is reached through a device array of pointers, not an argument.
__global__ void gather_kernel(float* out, float* const* table, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] = table[0][i];
}
__global__ void accumulate_kernel(float* acc, const float* x, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) acc[i] += x[i];
}
// Writes n + extra floats of dynamic shared memory, then their sum to *out.
__global__ void smem_write_kernel(float* out, int n, int extra) {
  SFT_DYNAMIC_SMEM(float, s);
  for (int i = int(threadIdx.x); i < n + extra; i += int(blockDim.x)) s[i] = 1.f;
  __syncthreads();
  if (threadIdx.x == 0) {
    float t = 0;
    for (int i = 0; i < n; i++) t += s[i];
    *out = t;
  }
}

// One m16n8k16 product of zero fragments, except that lane `exit_lane` returns first; with
// `diverge`, lanes 16..31 run an ldmatrix instead. out[lane] = acc[0].
__global__ void mma_kernel(float* out, int exit_lane, int diverge) {
  SFT_DYNAMIC_SMEM(sft::cuda::bf16, s);
  const int lane = int(threadIdx.x);
  if (lane == exit_lane) return;
  uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  float acc[4] = {1.f, 1.f, 1.f, 1.f};
  if (diverge && lane >= 16)
    sft::cuda::ldmatrix_x4(a, s + (lane % 16) * 8);
  else
    sft::cuda::mma_bf16_16x8x16(acc, a, b);
  out[lane] = acc[0];
}
// ldmatrix with every lane's row address in global memory (src), not shared memory.
__global__ void ldmatrix_global_kernel(float* out, const sft::cuda::bf16* src) {
  uint32_t r[4];
  sft::cuda::ldmatrix_x4(r, src + (threadIdx.x % 32) * 8);
  out[threadIdx.x] = float(r[0]);
}
// cp.async of 16 bytes per thread into shared memory, then each thread reads its neighbour's
// chunk after a barrier but without waiting for its copies: out[i] = what it read.
__global__ void cp_async_no_wait_kernel(float* out, const float* src) {
  SFT_DYNAMIC_SMEM(float, s);
  const int i = int(threadIdx.x);
  sft::cuda::cp_async_16(s + 4 * i, src + 4 * i, true);
  sft::cuda::cp_async_commit();
  __syncthreads();  // a barrier is not a wait: the copies may still be in flight
  out[i] = s[4 * ((i + 1) % 32)];
  __syncthreads();
  sft::cuda::cp_async_wait<0>();
}

std::vector<float> iota(int n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int i = 0; i < n; i++) v[size_t(i)] = float(i);
  return v;
}

int mode_ok() {
  const int n = 1000;
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  float *x, *y, *h;
  CHECK(cudaMalloc(&x, n * sizeof(float)));
  CHECK(cudaMallocAsync(&y, n * sizeof(float), stream));
  CHECK(cudaMallocHost(&h, n * sizeof(float)));
  EXPECT(reinterpret_cast<uintptr_t>(x) % 256 == 0 && reinterpret_cast<uintptr_t>(y) % 256 == 0);
  for (int i = 0; i < n; i++) h[i] = float(i);
  CHECK(cudaMemcpyAsync(x, h, n * sizeof(float), cudaMemcpyHostToDevice, stream));
  CHECK(cudaMemsetAsync(y, 0, n * sizeof(float), stream));
  SFT_LAUNCH(grid_for(n, 256), 256, 0, stream, axpy_kernel)(y, x, 2.f, n);
  CHECK(cudaPeekAtLastError());
  std::vector<float> out(static_cast<size_t>(n));
  CHECK(cudaMemcpyAsync(out.data(), y, n * sizeof(float), cudaMemcpyDefault, stream));
  CHECK(cudaStreamSynchronize(stream));
  for (int i = 0; i < n; i++) EXPECT(out[size_t(i)] == 2.f * float(i));

  // One past the end is a valid argument (an empty range); device-to-device copies.
  SFT_LAUNCH(1, 32, 0, stream, axpy_kernel)(y + n, x + n, 1.f, 0);
  CHECK(cudaMemcpy(y, x, n * sizeof(float), cudaMemcpyDeviceToDevice));

  // A kernel reaching a buffer through a table of device pointers (opened on first touch).
  float** table;
  CHECK(cudaMalloc(&table, sizeof(float*)));
  CHECK(cudaMemcpy(table, &x, sizeof(float*), cudaMemcpyHostToDevice));
  SFT_LAUNCH(grid_for(n, 256), 256, 0, stream, gather_kernel)(y, table, n);
  CHECK(cudaMemcpy(out.data(), y, n * sizeof(float), cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; i++) EXPECT(out[size_t(i)] == float(i));

  // 2-D copies: a 10 x 20 window of h into rows of 32 floats, and back.
  float* m;
  CHECK(cudaMalloc(&m, 10 * 32 * sizeof(float)));
  CHECK(cudaMemcpy2D(m, 32 * sizeof(float), h, 20 * sizeof(float), 20 * sizeof(float), 10, cudaMemcpyHostToDevice));
  std::vector<float> win(200);
  CHECK(cudaMemcpy2DAsync(win.data(), 20 * sizeof(float), m, 32 * sizeof(float), 20 * sizeof(float), 10,
                          cudaMemcpyDeviceToHost, stream));
  for (int i = 0; i < 200; i++) EXPECT(win[size_t(i)] == float(i));
  EXPECT(cudaMemcpy2D(m, 4, h, 4, 8, 1, cudaMemcpyHostToDevice) == cudaErrorInvalidPitchValue);
  EXPECT(cudaGetLastError() == cudaErrorInvalidPitchValue);

  // Dynamic shared memory above 48 KiB with the attribute set.
  float* sum;
  CHECK(cudaMalloc(&sum, sizeof(float)));
  const int big = 16 * 1024;  // 64 KiB of floats
  CHECK(cudaFuncSetAttribute(smem_write_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, big * 4));
  SFT_LAUNCH(1, 256, big * 4, stream, smem_write_kernel)(sum, big, 0);
  CHECK(cudaGetLastError());
  float s = 0;
  CHECK(cudaMemcpy(&s, sum, sizeof(float), cudaMemcpyDeviceToHost));
  EXPECT(s == float(big));
  EXPECT(cudaFuncSetAttribute(smem_write_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024) ==
         cudaErrorInvalidValue);
  EXPECT(cudaGetLastError() == cudaErrorInvalidValue);

  // Events and stream ordering (all synchronous here, but the calls must be valid).
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreateWithFlags(&b, cudaEventDisableTiming));
  CHECK(cudaEventRecord(a, stream));
  CHECK(cudaEventRecord(b, stream));
  CHECK(cudaStreamWaitEvent(nullptr, b, 0));
  CHECK(cudaEventQuery(b));
  CHECK(cudaEventSynchronize(a));
  float ms = 0;
  EXPECT(cudaEventElapsedTime(&ms, a, b) == cudaErrorInvalidResourceHandle);
  EXPECT(cudaPeekAtLastError() == cudaErrorInvalidResourceHandle);
  EXPECT(cudaGetLastError() == cudaErrorInvalidResourceHandle);
  EXPECT(cudaGetLastError() == cudaSuccess);
  CHECK(cudaEventElapsedTime(&ms, a, a));
  CHECK(cudaEventDestroy(a));
  CHECK(cudaEventDestroy(b));

  // The device.
  int v = 0, dev = -1;
  CHECK(cudaSetDevice(0));
  CHECK(cudaGetDevice(&dev));
  EXPECT(dev == 0);
  EXPECT(cudaSetDevice(1) == cudaErrorInvalidDevice && cudaGetLastError() == cudaErrorInvalidDevice);
  CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMajor, 0));
  EXPECT(v == 8);
  CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMinor, 0));
  EXPECT(v == 6);
  CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, 0));
  EXPECT(v >= 1);
  CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
  EXPECT(v == 99 * 1024);
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  EXPECT(std::strstr(prop.name, "emulation") && prop.totalGlobalMem == sft_emu::device_memory_limit());
  CHECK(cudaDriverGetVersion(&v));
  EXPECT(v >= 12000);
  CHECK(cudaRuntimeGetVersion(&v));
  EXPECT(v >= 12000);
  size_t free_b = 0, total_b = 0;
  CHECK(cudaMemGetInfo(&free_b, &total_b));
  EXPECT(total_b - free_b == sft_emu::live_device_bytes());
  EXPECT(!std::strcmp(cudaGetErrorName(cudaErrorMemoryAllocation), "cudaErrorMemoryAllocation"));
  EXPECT(!std::strcmp(cudaGetErrorString(cudaErrorMemoryAllocation), "out of memory"));
  EXPECT(!std::strcmp(cudaGetErrorString(cudaSuccess), "no error"));

  // The default memory pool.
  cudaMemPool_t pool;
  CHECK(cudaDeviceGetDefaultMemPool(&pool, 0));
  uint64_t threshold = UINT64_MAX, got = 0;
  CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &got));
  EXPECT(got == UINT64_MAX);
  CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &got));
  EXPECT(got == n * sizeof(float));  // y, from cudaMallocAsync

  CHECK(cudaFreeAsync(y, stream));
  CHECK(cudaFree(x));
  CHECK(cudaFree(table));
  CHECK(cudaFree(m));
  CHECK(cudaFree(sum));
  CHECK(cudaFree(nullptr));
  CHECK(cudaFreeHost(h));
  void* p = nullptr;
  CHECK(cudaHostAlloc(&p, 64, cudaHostAllocPortable));
  CHECK(cudaFreeHost(p));
  CHECK(cudaStreamSynchronize(stream));
  CHECK(cudaStreamDestroy(stream));
  CHECK(cudaDeviceSynchronize());
  EXPECT(sft_emu::live_device_allocations() == 0 && sft_emu::live_device_bytes() == 0);
  EXPECT(sft_emu::live_pinned_allocations() == 0);
  std::printf("selftest ok\n");
  return 0;
}

int run(const std::string& mode) {
  if (mode == "ok") return mode_ok();
  const int n = 100;  // 400 bytes: 112 bytes of slack to the 256 rounding, 3584 bytes before the start
  if (mode == "host-pointer" || mode == "pinned-arg" || mode == "freed-arg") {
    float *y, *x = nullptr;
    CHECK(cudaMalloc(&y, n * sizeof(float)));
    std::vector<float> h(size_t(n), 1.f);
    if (mode == "host-pointer") x = h.data();
    if (mode == "pinned-arg") CHECK(cudaMallocHost(&x, n * sizeof(float)));
    if (mode == "freed-arg") {
      CHECK(cudaMalloc(&x, n * sizeof(float)));
      CHECK(cudaFree(x));
    }
    SFT_LAUNCH(1, 128, 0, nullptr, axpy_kernel)(y, x, 2.f, n);
    std::printf("%s: the launch was not stopped\n", mode.c_str());
    return 1;
  }
  if (mode == "oob-read") {
    const int m = 64;  // 256 bytes: no slack, x[64] is on the guard page
    float *x, *out;
    CHECK(cudaMalloc(&x, m * sizeof(float)));
    CHECK(cudaMalloc(&out, m * sizeof(float)));
    CHECK(cudaMemset(x, 0, m * sizeof(float)));
    SFT_LAUNCH(1, 64, 0, nullptr, shift_read_kernel)(out, x, m);
    std::printf("oob-read: not caught\n");
    return 1;
  }
  if (mode == "oob-write" || mode == "underflow") {
    float* y;
    CHECK(cudaMalloc(&y, n * sizeof(float)));
    if (mode == "oob-write") SFT_LAUNCH(1, 128, 0, nullptr, write_upto_kernel)(y, n);
    else SFT_LAUNCH(1, 128, 0, nullptr, write_shifted_kernel)(y, n);
    std::printf("%s: not caught\n", mode.c_str());
    return 1;
  }
  if (mode == "use-after-free") {
    float *x, *out;
    float** table;
    CHECK(cudaMalloc(&x, n * sizeof(float)));
    CHECK(cudaMalloc(&out, n * sizeof(float)));
    CHECK(cudaMalloc(&table, sizeof(float*)));
    CHECK(cudaMemcpy(table, &x, sizeof(float*), cudaMemcpyHostToDevice));
    CHECK(cudaFree(x));  // the table still points at it
    SFT_LAUNCH(1, 128, 0, nullptr, gather_kernel)(out, table, n);
    std::printf("use-after-free: not caught\n");
    return 1;
  }
  if (mode == "double-free" || mode == "bad-free" || mode == "free-pinned") {
    float* y;
    std::vector<float> h(static_cast<size_t>(n));
    if (mode == "double-free") {
      CHECK(cudaMalloc(&y, n * sizeof(float)));
      CHECK(cudaFree(y));
      cudaFree(y);
    }
    if (mode == "bad-free") cudaFree(h.data());
    if (mode == "free-pinned") {
      CHECK(cudaMallocHost(&y, n * sizeof(float)));
      cudaFree(y);
    }
    std::printf("%s: not caught\n", mode.c_str());
    return 1;
  }
  if (mode == "leak") {
    float *a, *b, *c, *d;
    CHECK(cudaMalloc(&a, 400));
    CHECK(cudaMallocAsync(&b, 1000, nullptr));
    CHECK(cudaMallocHost(&c, 64));
    CHECK(cudaMalloc(&d, 16));
    CHECK(cudaFree(d));
    std::printf("leak: %zu device and %zu pinned allocation(s) left for the exit check\n",
                sft_emu::live_device_allocations(), sft_emu::live_pinned_allocations());
    return 0;  // the emulator's exit check turns this into exit status 3
  }
  if (mode == "uninitialized") {
    float *acc, *x;
    bf16* hb;
    CHECK(cudaMalloc(&acc, n * sizeof(float)));  // forgot cudaMemset(acc, 0, ...)
    CHECK(cudaMalloc(&x, n * sizeof(float)));
    CHECK(cudaMalloc(&hb, n * sizeof(bf16)));
    const std::vector<float> ones(size_t(n), 1.f);
    CHECK(cudaMemcpy(x, ones.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    SFT_LAUNCH(1, 128, 0, nullptr, accumulate_kernel)(acc, x, n);
    std::vector<float> got(static_cast<size_t>(n));
    std::vector<bf16> gotb(static_cast<size_t>(n));
    CHECK(cudaMemcpy(got.data(), acc, n * sizeof(float), cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(gotb.data(), hb, n * sizeof(bf16), cudaMemcpyDeviceToHost));
    int nan = 0, nanb = 0;
    for (int i = 0; i < n; i++) nan += std::isnan(got[size_t(i)]), nanb += std::isnan(__bfloat162float(gotb[size_t(i)]));
    std::printf("uninitialized: acc[0] = %g after acc += x into a buffer nobody zeroed; %d/%d fp32 and %d/%d bf16 "
                "elements are NaN\n",
                double(got[0]), nan, n, nanb, n);
    CHECK(cudaFree(acc));
    CHECK(cudaFree(x));
    CHECK(cudaFree(hb));
    return nan == n && nanb == n ? 0 : 1;
  }
  if (mode == "bad-memcpy" || mode == "bad-memcpy-kind" || mode == "bad-stream") {
    float* y;
    CHECK(cudaMalloc(&y, n * sizeof(float)));
    std::vector<float> h = iota(2 * n), h2(static_cast<size_t>(n));
    if (mode == "bad-memcpy") cudaMemcpy(y, h.data(), 2 * n * sizeof(float), cudaMemcpyHostToDevice);
    if (mode == "bad-memcpy-kind") cudaMemcpy(h2.data(), h.data(), n * sizeof(float), cudaMemcpyDeviceToHost);
    if (mode == "bad-stream") {
      cudaStream_t s;
      CHECK(cudaStreamCreate(&s));
      CHECK(cudaStreamDestroy(s));
      cudaMemcpyAsync(y, h.data(), n * sizeof(float), cudaMemcpyHostToDevice, s);
    }
    std::printf("%s: not caught\n", mode.c_str());
    return 1;
  }
  if (mode == "host-access") {
    float* y;
    CHECK(cudaMalloc(&y, n * sizeof(float)));
    volatile float* vy = y;
    std::printf("host-access: read %g, not caught\n", double(vy[3]));
    return 1;
  }
  if (mode == "smem-overflow" || mode == "smem-limit") {
    float* out;
    CHECK(cudaMalloc(&out, sizeof(float)));
    if (mode == "smem-overflow") {
      SFT_LAUNCH(1, 32, 256 * sizeof(float), nullptr, smem_write_kernel)(out, 256, 1);
      std::printf("smem-overflow: not caught\n");
      return 1;
    }
    SFT_LAUNCH(1, 256, 64 * 1024, nullptr, smem_write_kernel)(out, 16 * 1024, 0);
    const cudaError_t e = cudaGetLastError();
    std::printf("smem-limit: a launch with 64 KiB of dynamic shared memory and no cudaFuncSetAttribute: %s\n",
                cudaGetErrorName(e));
    CHECK(cudaFree(out));
    return e == cudaErrorInvalidValue ? 0 : 1;
  }
  if (mode == "oom") {
    size_t free_b = 0, total_b = 0;
    CHECK(cudaMemGetInfo(&free_b, &total_b));
    EXPECT(total_b == size_t(64) << 20 && free_b == total_b);
    float *a = nullptr, *b = nullptr;
    CHECK(cudaMalloc(&a, size_t(48) << 20));
    const cudaError_t e = cudaMalloc(&b, size_t(32) << 20);
    EXPECT(b == nullptr);
    EXPECT(cudaPeekAtLastError() == e && cudaGetLastError() == e && cudaGetLastError() == cudaSuccess);
    EXPECT(cudaMallocAsync(&b, size_t(32) << 20, nullptr) == e);
    std::printf("oom: cudaMalloc of 32 MiB with 48 MiB of 64 MiB in use: %s (%s)\n", cudaGetErrorName(e),
                cudaGetErrorString(e));
    CHECK(cudaFree(a));
    CHECK(cudaMalloc(&b, size_t(32) << 20));  // fits again
    CHECK(cudaFree(b));
    cudaGetLastError();
    return e == cudaErrorMemoryAllocation ? 0 : 1;
  }
  if (mode == "mma-exited-lane" || mode == "mma-divergent") {
    float* out;
    CHECK(cudaMalloc(&out, 32 * sizeof(float)));
    SFT_LAUNCH(1, 32, 256, nullptr, mma_kernel)(out, mode == "mma-exited-lane" ? 5 : -1, mode == "mma-divergent");
    std::printf("%s: not caught\n", mode.c_str());
    return 1;
  }
  if (mode == "ldmatrix-global") {
    float* out;
    sft::cuda::bf16* src;
    CHECK(cudaMalloc(&out, 32 * sizeof(float)));
    CHECK(cudaMalloc(&src, 256 * sizeof(sft::cuda::bf16)));
    SFT_LAUNCH(1, 32, 0, nullptr, ldmatrix_global_kernel)(out, src);
    std::printf("ldmatrix-global: not caught\n");
    return 1;
  }
  if (mode == "cp-async-no-wait") {
    float *out, *src;
    CHECK(cudaMalloc(&out, 32 * sizeof(float)));
    CHECK(cudaMalloc(&src, 128 * sizeof(float)));
    const std::vector<float> h = iota(128);
    CHECK(cudaMemcpy(src, h.data(), 128 * sizeof(float), cudaMemcpyHostToDevice));
    SFT_LAUNCH(1, 32, 128 * sizeof(float), nullptr, cp_async_no_wait_kernel)(out, src);
    std::vector<float> r(32);
    CHECK(cudaMemcpy(r.data(), out, 32 * sizeof(float), cudaMemcpyDeviceToHost));
    int nan = 0;
    for (float x : r) nan += std::isnan(x);
    std::printf("cp-async-no-wait: out[0] = %g; %d/32 reads before the wait are NaN\n", double(r[0]), nan);
    CHECK(cudaFree(out));
    CHECK(cudaFree(src));
    return 0;
  }
  std::fprintf(stderr,
               "usage: sft_cuda_emu_selftest MODE (ok host-pointer pinned-arg freed-arg oob-read oob-write underflow "
               "use-after-free double-free bad-free free-pinned leak uninitialized bad-memcpy bad-memcpy-kind "
               "bad-stream host-access smem-overflow smem-limit oom mma-exited-lane mma-divergent ldmatrix-global "
               "cp-async-no-wait)\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // The violation modes abort on purpose: no core files from them.
  const rlimit no_core{0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "oom" && !std::getenv("SFT_EMU_DEVICE_MEMORY")) setenv("SFT_EMU_DEVICE_MEMORY", "64M", 1);
  return run(mode);
}
