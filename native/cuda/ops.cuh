// The CUDA backend's ops in one include, as cpu/ops.h + cpu/gemm.h + cpu/quant.h are the CPU's.
// Each family is a .cu/.cuh pair named like its CPU file. The .cuh headers hold host declarations
// only, so model code compiled by the C++ compiler can include them (with the CUDA include path).
//
// Conventions (mirroring native/cpu/ops.h, llm.c style):
//  - Host launchers in namespace sft::cuda take the CPU functions' arguments in the CPU order, as
//    DEVICE pointers, plus a trailing stream (default: the legacy default stream). They launch
//    asynchronously and check only the launch; the two that return a host value
//    (cross_entropy, global_grad_norm) wait for their stream.
//  - T is the storage type of activations and their gradients: float or bf16. All arithmetic is
//    fp32. Per-row statistics (rstd, mean, logsumexp), rotary tables and parameter gradients (dw,
//    dtable) are always fp32 -- that is where the signatures differ from the CPU ones -- and the
//    attention saves logsumexp [B, nh, Tq] instead of the CPU's probability matrix.
//  - Backward launchers ADD into gradient outputs (+=), like the CPU backend; null dw = frozen.
//  - No result depends on atomics' timing: every reduction runs in a fixed order, so a run is
//    bit-for-bit repeatable for one GPU model and build.
//  - Temporary buffers come from cudaMallocAsync on the call's stream (the driver's pool).
//
// NOT YET RUN ON A GPU (written in a session without one): test/cuda/test_kernels.cu checks
// every op against the CPU backend; scripts/gpu-check.sh runs it (see bench/gpu/README.md).
#pragma once
#include "cuda/act.cuh"
#include "cuda/adamw.cuh"
#include "cuda/attention.cuh"
#include "cuda/embed.cuh"
#include "cuda/gemm.cuh"
#include "cuda/linear.cuh"
#include "cuda/lora.cuh"
#include "cuda/loss.cuh"
#include "cuda/norm.cuh"
#include "cuda/quant.cuh"
#include "cuda/rope.cuh"
#include "cuda/tensor.cuh"
