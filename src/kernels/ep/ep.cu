// The expert-parallel plan and expansion (ep.hpp). Deterministic: every
// position comes from an exclusive scan (CUB) over per-(destination, token)
// counts, never from atomics, so the plan is the reference's integers.
#include "kernels/ep/ep.hpp"

#include <cub/device/device_scan.cuh>

namespace moekit::kernels {

namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>((n + kThreads - 1) / kThreads);
}

// counts[0][d][t] = 1 if token t has a slot on rank d, counts[1][d][t] = its
// slots there. One thread per token writes all R entries of its column.
__global__ void ep_count_kernel(const int32_t* __restrict__ ids, int64_t T, int64_t k, EpPlacement p,
                                int32_t* __restrict__ counts) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= T) return;
  const int64_t R = p.num_ranks;
  int32_t* rows = counts;
  int32_t* pairs = counts + R * T;
  for (int64_t d = 0; d < R; ++d) rows[d * T + t] = pairs[d * T + t] = 0;
  for (int64_t s = 0; s < k; ++s) {
    const int64_t d = ep_owner_of(p, ids[t * k + s]);
    if (d < 0) continue;
    rows[d * T + t] = 1;
    ++pairs[d * T + t];
  }
}

// The scans are global positions in destination-major order, which is the
// send buffer's (rows) and the return buffer's (pairs) order.
__global__ void ep_fill_kernel(const int32_t* __restrict__ ids, int64_t T, int64_t k, EpPlacement p,
                               const int32_t* __restrict__ positions, int32_t* __restrict__ row_token,
                               int32_t* __restrict__ row_ids, int32_t* __restrict__ pair_row) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= T) return;
  const int64_t R = p.num_ranks;
  const int32_t* row_pos = positions;
  const int32_t* pair_pos = positions + R * T;
  for (int64_t s = 0; s < k; ++s) {
    const int64_t g = ids[t * k + s];
    const int64_t d = ep_owner_of(p, g);
    if (d < 0) {
      pair_row[t * k + s] = -1;
      continue;
    }
    int64_t before = 0;  // this token's earlier slots on d
    for (int64_t j = 0; j < s; ++j) before += ep_owner_of(p, ids[t * k + j]) == d;
    const int64_t row = row_pos[d * T + t];
    if (before == 0) {  // the token's first slot on d: its send row
      row_token[row] = static_cast<int32_t>(t);
      for (int64_t j = 0; j < k; ++j) row_ids[row * k + j] = -1;
    }
    row_ids[row * k + s] = ep_local_of(p, g);
    pair_row[t * k + s] = static_cast<int32_t>(pair_pos[d * T + t] + before);
  }
}

// offsets[d] = the scan at the start of destination d's segment; offsets[R] = the total.
__global__ void ep_offsets_kernel(const int32_t* __restrict__ counts, const int32_t* __restrict__ positions,
                                  int64_t R, int64_t T, int32_t* __restrict__ row_offset,
                                  int32_t* __restrict__ pair_offset) {
  const int64_t d = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (d > R) return;
  for (int which = 0; which < 2; ++which) {
    const int32_t* c = counts + which * R * T;
    const int32_t* pos = positions + which * R * T;
    int32_t* out = which == 0 ? row_offset : pair_offset;
    if (T == 0) out[d] = 0;
    else out[d] = d < R ? pos[d * T] : pos[R * T - 1] + c[R * T - 1];
  }
}

__global__ void ep_flag_pairs_kernel(const int32_t* __restrict__ row_ids, int64_t n,
                                     int32_t* __restrict__ flags) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) flags[i] = row_ids[i] >= 0;
}

__global__ void ep_expand_kernel(const int32_t* __restrict__ row_ids, int64_t n, int64_t k,
                                 const int32_t* __restrict__ flags, const int32_t* __restrict__ positions,
                                 int32_t* __restrict__ pair_row_of, int32_t* __restrict__ pair_expert,
                                 int32_t* __restrict__ pair_count) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i == 0) *pair_count = n == 0 ? 0 : positions[n - 1] + flags[n - 1];
  if (i >= n || !flags[i]) return;
  pair_row_of[positions[i]] = static_cast<int32_t>(i / k);
  pair_expert[positions[i]] = row_ids[i];
}

cudaError_t scan_bytes(int64_t n, size_t* bytes) {
  *bytes = 0;
  return cub::DeviceScan::ExclusiveSum(nullptr, *bytes, static_cast<const int32_t*>(nullptr),
                                       static_cast<int32_t*>(nullptr), static_cast<int>(n));
}

}  // namespace

cudaError_t ep_plan_temp_bytes(int64_t num_ranks, int64_t num_tokens, size_t* bytes) {
  return scan_bytes(num_ranks * num_tokens, bytes);
}

cudaError_t launch_ep_plan(const int32_t* topk_ids, int64_t T, int64_t k, const EpPlacement& p,
                           const EpPlanBuffers& b, cudaStream_t stream) {
  const int64_t R = p.num_ranks, n = R * T;
  if (R < 1 || n > (int64_t{1} << 31) - 1 || T * k > (int64_t{1} << 31) - 1) return cudaErrorInvalidValue;
  if (T > 0) {
    ep_count_kernel<<<blocks_for(T), kThreads, 0, stream>>>(topk_ids, T, k, p, b.counts);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    for (int which = 0; which < 2; ++which) {
      size_t bytes = b.temp_bytes;
      if (cudaError_t e = cub::DeviceScan::ExclusiveSum(b.temp, bytes, b.counts + which * n,
                                                        b.positions + which * n, static_cast<int>(n), stream);
          e != cudaSuccess)
        return e;
    }
    ep_fill_kernel<<<blocks_for(T), kThreads, 0, stream>>>(topk_ids, T, k, p, b.positions, b.row_token,
                                                           b.row_ids, b.pair_row);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  }
  ep_offsets_kernel<<<blocks_for(R + 1), kThreads, 0, stream>>>(b.counts, b.positions, R, T, b.row_offset,
                                                                b.pair_offset);
  return cudaGetLastError();
}

cudaError_t ep_expand_temp_bytes(int64_t rows, int64_t top_k, size_t* bytes) {
  return scan_bytes(rows * top_k, bytes);
}

cudaError_t launch_ep_expand(const int32_t* row_ids, int64_t rows, int64_t k, const EpExpandBuffers& b,
                             cudaStream_t stream) {
  const int64_t n = rows * k;
  if (n > (int64_t{1} << 31) - 1) return cudaErrorInvalidValue;
  if (n > 0) {
    ep_flag_pairs_kernel<<<blocks_for(n), kThreads, 0, stream>>>(row_ids, n, b.flags);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    size_t bytes = b.temp_bytes;
    if (cudaError_t e = cub::DeviceScan::ExclusiveSum(b.temp, bytes, b.flags, b.positions,
                                                      static_cast<int>(n), stream);
        e != cudaSuccess)
      return e;
  }
  ep_expand_kernel<<<blocks_for(n > 0 ? n : 1), kThreads, 0, stream>>>(row_ids, n, k, b.flags, b.positions,
                                                                       b.pair_row_of, b.pair_expert,
                                                                       b.pair_count);
  return cudaGetLastError();
}

}  // namespace moekit::kernels
