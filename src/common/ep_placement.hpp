// Where a global expert runs under an expert-parallel placement: one rule
// for the host reference (reference/ep.cpp) and the device plan
// (src/kernels/ep), so both place every id alike.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define MOEKIT_EP_HD __host__ __device__ __forceinline__
#else
#define MOEKIT_EP_HD inline
#endif

namespace moekit {

struct EpPlacementView {
  int64_t num_experts;    // E_total
  int64_t num_ranks;      // R
  int64_t local_experts;  // E_local, for contiguous ranges (owner null)
  const int32_t* owner;   // [E_total] rank or -1, or null: id / E_local
  const int32_t* local;   // [E_total] local index on the owner (with owner)
};

// The rank that runs global id g, or -1 (negative, >= E_total, unowned, or
// past the last range).
MOEKIT_EP_HD int64_t ep_owner_of(const EpPlacementView& p, int64_t g) {
  if (g < 0 || g >= p.num_experts) return -1;
  if (p.owner == nullptr) return p.local_experts > 0 && g / p.local_experts < p.num_ranks ? g / p.local_experts : -1;
  const int32_t r = p.owner[g];
  return r >= 0 && r < p.num_ranks ? r : -1;
}

// Its local expert on that rank (meaningful when ep_owner_of(p, g) >= 0).
MOEKIT_EP_HD int32_t ep_local_of(const EpPlacementView& p, int64_t g) {
  return p.owner == nullptr ? static_cast<int32_t>(g % p.local_experts) : p.local[g];
}

}  // namespace moekit
