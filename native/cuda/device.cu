// CUDA backend, first piece: device discovery. The addon links the static CUDA runtime, so it
// loads on machines without a driver; there cudaGetDeviceCount reports an error and sft runs
// on the CPU. The kernels of the CUDA backend (issue 3) will live beside this file, one
// .cu per op family with the same names as native/cpu/.
#include <cuda_runtime.h>

#include <string>

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

}  // namespace sft::cuda
