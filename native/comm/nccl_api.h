// The few NCCL entry points sft uses, declared from NCCL's documented C ABI (nccl.h, stable since
// NCCL 2.0), so the NCCL communicator compiles wherever nvcc does, without NCCL's headers; the
// library itself (libnccl.so.2) is loaded at run time.
#pragma once
#include <cstddef>

namespace sft::comm::nccl {

typedef struct ncclComm* ncclComm_t;
typedef struct { char internal[128]; } ncclUniqueId;  // NCCL_UNIQUE_ID_BYTES
typedef int ncclResult_t;                              // ncclSuccess = 0
enum : int { ncclSuccess = 0 };
enum : int { ncclFloat32 = 7, ncclFloat64 = 8, ncclUint8 = 1 };  // ncclDataType_t
enum : int { ncclSum = 0 };                                       // ncclRedOp_t

struct Api {
  ncclResult_t (*GetUniqueId)(ncclUniqueId*);
  ncclResult_t (*CommInitRank)(ncclComm_t*, int nranks, ncclUniqueId id, int rank);
  ncclResult_t (*AllReduce)(const void* send, void* recv, size_t count, int dtype, int op, ncclComm_t, void* stream);
  ncclResult_t (*Broadcast)(const void* send, void* recv, size_t count, int dtype, int root, ncclComm_t, void* stream);
  ncclResult_t (*AllGather)(const void* send, void* recv, size_t send_count, int dtype, ncclComm_t, void* stream);
  ncclResult_t (*GroupStart)();
  ncclResult_t (*GroupEnd)();
  ncclResult_t (*CommDestroy)(ncclComm_t);
  ncclResult_t (*CommAbort)(ncclComm_t);
  const char* (*GetErrorString)(ncclResult_t);
};

}  // namespace sft::comm::nccl
