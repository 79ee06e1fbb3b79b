// CUDA backend: device discovery and the backend's error reporting. The addon links the static
// CUDA runtime, so it loads on machines without a driver; there cudaGetDeviceCount reports an
// error and sft runs on the CPU. The kernels live beside this file, one .cu/.cuh pair per op
// family with the same names as native/cpu/ (ops.cuh includes them all).
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda/types.h"
#include "cuda/device.h"

namespace sft::cuda {

int device_count(std::string* error) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (error) *error = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
    cudaGetLastError();  // clear the sticky error
    return 0;
  }
  return n;
}

int& process_device() {
  static int d = 0;
  return d;
}

void select_process_device() {
  if (process_device() != 0) cudaSetDevice(process_device());
}

void throw_cuda_error(cudaError_t e, const char* what, const char* file, int line) {
  cudaGetLastError();  // clear a non-sticky error so the caller can go on (e.g. fall back)
  throw std::runtime_error(std::string("CUDA error ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) +
                           ") in " + what + " at " + file + ":" + std::to_string(line));
}

}  // namespace sft::cuda
