// What the CUDA backend's host-side declarations need, includable from plain C++ (g++): the bf16
// element type, streams, and the error check. Device helpers live in common.cuh (kernels only).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace sft::cuda {

using bf16 = __nv_bfloat16;

// Throws std::runtime_error naming the failed call, file and line (defined in device.cu).
[[noreturn]] void throw_cuda_error(cudaError_t e, const char* what, const char* file, int line);

}  // namespace sft::cuda

#define SFT_CUDA_CHECK(expr)                                                                     \
  do {                                                                                           \
    const cudaError_t sft_e_ = (expr);                                                           \
    if (sft_e_ != cudaSuccess) ::sft::cuda::throw_cuda_error(sft_e_, #expr, __FILE__, __LINE__); \
  } while (0)
// After a <<<...>>> launch: reports bad launch configurations at once (no synchronisation).
#define SFT_CUDA_CHECK_LAUNCH(name) SFT_CUDA_CHECK(cudaPeekAtLastError())
