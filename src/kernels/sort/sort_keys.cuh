// The sort's key of a (token, slot) pair and the stable rank of a few keys
// in one warp: shared by the sort (sort.cu) and the decode GEMM, which ranks
// the ids of a tiny batch itself when it follows the sort directly
// (decode_gemm.cu), so both order the rows alike.
#pragma once

#include <cstdint>

#include "kernels/kernels.hpp"

namespace moekit::kernels {

// The local expert of id, or num_local for an invalid or remote id. No id
// outside [0, num_experts) is ever used as an index or reaches the
// subtraction (int64: id - first cannot overflow).
__device__ __forceinline__ uint32_t local_key(int64_t id, const Placement& pl) {
  if (id < 0 || id >= pl.num_experts) return static_cast<uint32_t>(pl.num_local);
  const int64_t e = pl.map != nullptr ? static_cast<int64_t>(__ldg(pl.map + id)) : id - pl.first;
  return (e >= 0 && e < pl.num_local) ? static_cast<uint32_t>(e) : static_cast<uint32_t>(pl.num_local);
}

// How many of keys[0, n) are below e: the first row of expert e once the
// keys are sorted (expert_offsets[e]), counted without sorting them.
__device__ __forceinline__ int32_t keys_below(const uint32_t* keys, int64_t n, int64_t e) {
  int32_t below = 0;
  for (int64_t j = 0; j < n; ++j) below += keys[j] < static_cast<uint64_t>(e);
  return below;
}

// The stable rank of this lane's key among the warp's 32 keys: smaller keys,
// then equal keys of lower lanes. Called by a whole warp; lanes past the last
// pair pass 0xffffffff, which ranks after every key.
__device__ __forceinline__ int warp_stable_rank(uint32_t key) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  int rank = 0;
#pragma unroll
  for (int j = 0; j < 32; ++j) {
    const uint32_t other = __shfl_sync(0xffffffffu, key, j);
    rank += other < key || (other == key && j < lane);
  }
  return rank;
}

}  // namespace moekit::kernels
