// Counter-based random numbers, one definition for the CPU and the CUDA backends: the same
// (seed, stream, index) always gives the same value, whatever the thread or block layout, so LoRA
// dropout masks are never stored — backward (and every backend) regenerates them.
// splitmix64's finaliser; integer arithmetic only, so host and device agree bit for bit.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SFT_HD __host__ __device__ __forceinline__
#else
#define SFT_HD inline
#endif

namespace sft::rng {

SFT_HD uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The per-(seed, stream) key every index of that stream starts from (computed once per tensor).
SFT_HD uint64_t stream_key(uint64_t seed, uint64_t stream) { return mix(seed ^ mix(stream)); }

// Uniform in [0, 1) with 53 random bits: element i of the stream whose key is `key`.
SFT_HD double uniform01_key(uint64_t key, uint64_t i) {
  return double(mix(key + i) >> 11) * (1.0 / 9007199254740992.0);
}

// uniform01_key(key, i) < p in integers: the top 53 bits of mix(key + i) below ceil(p 2^53) (the
// double is those bits times 2^-53, exactly), which vectorises where the double compare does not.
SFT_HD uint64_t drop_threshold(double p) { return uint64_t(std::ceil(p * 9007199254740992.0)); }
SFT_HD bool dropped(uint64_t key, uint64_t i, uint64_t threshold) { return (mix(key + i) >> 11) < threshold; }

SFT_HD double uniform01(uint64_t seed, uint64_t stream, uint64_t i) { return uniform01_key(stream_key(seed, stream), i); }

// LoRA dropout's stream for one training step (one mask per adapter and step).
SFT_HD uint64_t dropout_stream(int64_t step) { return mix(uint64_t(step) * 0x100000001b3ull); }

}  // namespace sft::rng

#undef SFT_HD
