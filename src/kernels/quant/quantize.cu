// fp8 activation quantization (moekit.h, moekit_quant_t), fused into the two
// stages that produce a GEMM's input rows: the gather (GEMM 1) and the
// activation (GEMM 2). One warp per row (per 8-group chunk of a row with
// block scaling); each half-warp takes one 128-column group at a time with
// 8 columns (one 16-byte load) per lane, so the group's
// amax is a 16-lane shuffle reduction and each lane writes its 8 e4m3 bytes
// in one 8-byte store. Dynamic per-tensor scaling needs the whole row's amax
// first: a warp reduction (with few rows, a block per row with a lane per 8
// columns and a block reduction, so a long row is one or two steps), then
// the values are produced again (cheap: the row is in L1/L2; the block form
// keeps activation values in registers instead) and quantized.
//
// Scales are written where the CUTLASS blockwise GEMM reads them: for each
// expert's rows [o_e, o_e + m_e) a column-major [ceil(K/128), m_e] block at
// scales + o_e * ceil(K/128). Per-tensor scaling folds the expert's weight
// scale into every entry (the GEMM then multiplies by 1), so both schemes run
// the same GEMM arithmetic.
#include <algorithm>
#include <type_traits>

#include "common/fp8_math.hpp"
#include "kernels/activation/activation.cuh"
#include "kernels/common.cuh"
#include "kernels/quant/fp8_device.cuh"
#include "kernels/quant/quantize_rows.cuh"
#include "kernels/kernels.hpp"

namespace moekit::kernels {

namespace {

using namespace quant;

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
// Block scaling splits rows into chunks of one warp step (two groups per
// step, Source::kSteps steps: the gather's 8, the activation's 2) while there
// are too few rows to give every warp slot of the GPU a few (decode: mixtral
// T = 1 went from 227 to 123 us on an H200 with chunks of 8); with many rows
// a warp takes a whole row (chunks then cost a re-done expert search each:
// deepseek-v3 T = 4096's gather went from 289 to 584 us).
constexpr int64_t kWholeRowsFrom = 8 * kWarps;  // rows per SM
// Expert offsets cached in shared memory up to this many experts (4 KB).
constexpr int kCachedExperts = 1024;

// Row values of GEMM 2's input: the activation of GEMM 1's row, rounded to
// the compute dtype as in the unquantized layer.
template <class T>
struct ActivationSource {
  // One step at a time: the activation math of more steps at once spills
  // (measured: 117 -> 142 us at qwen3 T = 4096 with 4 steps).
  static constexpr int kSteps = 1;
  // Per tensor, dynamic, a block a row (decode): rows of up to this many
  // steps a lane (I <= 16384 at 1024 lanes) keep their values in registers
  // between the amax and the quantization, so the activation is computed
  // once (mixtral T = 1: 108.2 -> 106.3 us, H200). Not in the warp-a-row
  // form: holding 4 steps took it from 64 to 96 registers, and the lost
  // occupancy cost more than the second activation pass (qwen3 T = 1024
  // 293.6 -> 299.0 us, mixtral T = 4096 3293 -> 3359, qwen3 T = 4096 even).
  static constexpr int kHeldSteps = 2;
  const T* gemm1;  // [rows, N1]
  int64_t inter;
  ActivationParams act;
  moekit_gate_up_order_t order;
  using Row = const T*;
  __device__ Row row(int64_t row, int64_t) const {
    return gemm1 + row * (activation_is_gated(act.kind) ? 2 * inter : inter);
  }
  __device__ void values(const T* g, int64_t col, float (&v)[8]) const {
    activation8(g, col, inter, act, order, v);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = to_float(from_float<T>(v[i]));
  }
};

// One row with per-tensor scaling, by `lanes` lanes (a warp, or the whole
// block; lane_id in [0, lanes)): unless the scale is static, the row's amax
// first (reduce: the lanes' maxima to the row's, returned to every lane);
// then the row is produced again and quantized, and every group's scale
// entry set to the row's scale times the expert's weight scale. Both passes
// walk the row the same way: kSteps steps' loads in flight, then
// use(column, values) for each step inside the row. A dynamic scale on a row
// of at most kHeld steps a lane takes one pass instead, the values held in
// registers (same values, same amax: the same bits).
template <int kHeld, class Source, class Reduce>
__device__ __forceinline__ void quantize_row_tensor(const Source& src, const typename Source::Row& in, int64_t k,
                                                    int lanes, int lane_id, const float* static_scale, float w_scale,
                                                    uint8_t* dst, float* sc, int64_t rows_e, int64_t groups,
                                                    Reduce&& reduce) {
  constexpr int kSteps = Source::kSteps;
  const int64_t stride = int64_t{lanes} * kLaneCols;  // columns of one step
  auto walk = [&](auto use) {
    for (int64_t c0 = static_cast<int64_t>(lane_id) * kLaneCols; c0 < k; c0 += kSteps * stride) {
      float v[kSteps][8];
#pragma unroll
      for (int j = 0; j < kSteps; ++j)
        if (c0 + j * stride < k) src.values(in, c0 + j * stride, v[j]);
#pragma unroll
      for (int j = 0; j < kSteps; ++j)
        if (c0 + j * stride < k) use(c0 + j * stride, v[j]);
    }
  };
  auto write_scales = [&](float s) {
    const float row_scale = s * w_scale;
    for (int64_t g = lane_id; g < groups; g += lanes) sc[g * rows_e] = row_scale;
  };
  if constexpr (kHeld > 0) {
    if (static_scale == nullptr && k <= kHeld * stride) {  // uniform over the lanes
      float v[kHeld > 0 ? kHeld : 1][8];
      float amax = 0.0f;
#pragma unroll
      for (int j = 0; j < kHeld; ++j) {
        const int64_t col = static_cast<int64_t>(lane_id) * kLaneCols + j * stride;
        if (col < k) {
          src.values(in, col, v[j]);
          amax = fmaxf(amax, amax8(v[j]));
        }
      }
      const float s = fp8_scale_of(reduce(amax)), inv = fp8_inverse(s);
#pragma unroll
      for (int j = 0; j < kHeld; ++j) {
        const int64_t col = static_cast<int64_t>(lane_id) * kLaneCols + j * stride;
        if (col < k) *reinterpret_cast<uint2*>(dst + col) = quantize8<false>(v[j], s, inv);
      }
      write_scales(s);
      return;
    }
  }
  float s;
  if (static_scale != nullptr) {
    s = __ldg(static_scale);
  } else {
    float amax = 0.0f;
    walk([&](int64_t, const float(&v)[8]) { amax = fmaxf(amax, amax8(v)); });
    s = fp8_scale_of(reduce(amax));
  }
  const float inv = fp8_inverse(s);
  walk([&](int64_t col, const float(&v)[8]) {
    // A dynamic scale is the row's own amax: no Inf check (quantize8).
    *reinterpret_cast<uint2*>(dst + col) =
        static_scale != nullptr ? quantize8<true>(v, s, inv) : quantize8<false>(v, s, inv);
  });
  write_scales(s);
}

// Row values already computed in the compute dtype (GEMM 1's fused
// activation): quantized as they are.
template <class T>
struct RowSource {
  static constexpr int kSteps = 4;
  static constexpr int kHeldSteps = 0;
  const T* rows;  // [rows, K]
  using Row = const T*;
  __device__ Row row(int64_t row, int64_t k) const { return rows + row * k; }
  __device__ void values(const T* r, int64_t col, float (&v)[8]) const { load8(r + col, v); }
};

// Source row `row` of a block's or warp's first item, looked up before the
// expert offsets are read, so that at decode both loads (the gather's pair,
// the offsets) take one round trip instead of two. Any row below max_rows
// may be looked up whether or not it turns out valid: the sort writes a
// pair for every one of the T*k rows (invalid pairs last), so the lookup
// stays in bounds and reads written memory; an unused result is dropped.
template <class Source>
__device__ __forceinline__ typename Source::Row first_row(const Source& src, int64_t row, int64_t max_rows, int64_t k) {
  return row < max_rows ? src.row(row, k) : typename Source::Row{};
}

// The expert offsets in shared memory (cache, [kCachedExperts + 1]) when they
// fit: a row's expert is then one search without dependent global loads (at
// decode that chain, one load per halving of E, was most of the stage's
// time). Called by every thread of the block; offset(e) reads either copy.
struct ExpertOffsets {
  const int32_t* global;
  const int32_t* cache;
  bool cached;
  __device__ int32_t operator()(int e) const { return cached ? cache[e] : __ldg(global + e); }
};
__device__ __forceinline__ ExpertOffsets cache_offsets(const int32_t* offsets, int num_experts, int32_t* cache) {
  const bool cached = num_experts <= kCachedExperts;
  if (cached) {
    for (int e = threadIdx.x; e <= num_experts; e += blockDim.x) cache[e] = __ldg(offsets + e);
    __syncthreads();
  }
  return {offsets, cache, cached};
}
// Null offsets (QuantRows): one group of all max_rows rows, in the cache.
// Only block scaling's instance for rows quantized as they are takes this
// (in the per-tensor row kernel's 64 registers the check grew the stack
// frame from 16 to 40 bytes; the quantizers' SASS is otherwise unchanged).
__device__ __forceinline__ ExpertOffsets one_group_offsets(int32_t* cache, int64_t max_rows) {
  if (threadIdx.x == 0) {
    cache[0] = 0;
    cache[1] = static_cast<int32_t>(max_rows);
  }
  __syncthreads();
  return {nullptr, cache, true};
}

// Per-tensor scaling with few rows (decode): a block per row with a lane per
// 8 columns (up to kRowBlockThreads), the row's amax a block reduction, so a
// long row is one or two steps a pass. One warp walking a row step after
// step was most of a decode layer with long rows (mixtral T = 1 per tensor:
// 250 us against 105 with block scales, whose rows split into chunks over
// many warps; 138 with a block of 128 threads a row); with many rows a warp
// per row is faster (qwen3 T = 4096: 713 us, a block per row 810).
constexpr int kRowBlockThreads = 1024;
template <class T, class Source>
__global__ void __launch_bounds__(kRowBlockThreads) quantize_rows_tensor_kernel(
    Source src, const int32_t* __restrict__ offsets, int num_experts, int64_t k,
    const float* __restrict__ static_scale,  // the static scale, or null (dynamic)
    const float* __restrict__ w_scale,       // [E]
    uint8_t* __restrict__ out,               // [rows, K] e4m3
    float* __restrict__ scales, int64_t max_rows) {
  timeline::Scope timeline_scope(timeline::kQuantize);  // MOEKIT_TIMELINE builds only
  pdl_wait();  // the sort's maps (gather) or GEMM 1's output (activation)
  pdl_launch_dependents();
  __shared__ int32_t cached_offsets[kCachedExperts + 1];
  __shared__ float warp_amax[kRowBlockThreads / 32];
  // The first row's source is looked up beside the offsets (first_row).
  const typename Source::Row first_in = first_row(src, blockIdx.x, max_rows, k);
  const ExpertOffsets offset = cache_offsets(offsets, num_experts, cached_offsets);
  const int64_t valid = offset(num_experts), groups = fp8_blocks(k);
  const int warps = static_cast<int>(blockDim.x / 32);
  for (int64_t row = blockIdx.x; row < valid; row += gridDim.x) {
    const int e = last_at_most(offset, num_experts, row);
    const int64_t first = offset(e), rows_e = offset(e + 1) - first;
    float* sc = scales + first * groups + (row - first);  // column-major [groups, rows_e]
    quantize_row_tensor<Source::kHeldSteps>(
        src, row == blockIdx.x ? first_in : src.row(row, k), k, static_cast<int>(blockDim.x),
        static_cast<int>(threadIdx.x), static_scale, __ldg(w_scale + e), out + row * k, sc, rows_e, groups,
        [&](float amax) {
          amax = lanes_max<32>(amax);
          if (threadIdx.x % 32 == 0) warp_amax[threadIdx.x / 32] = amax;
          __syncthreads();
          for (int w = 0; w < warps; ++w) amax = fmaxf(amax, warp_amax[w]);
          __syncthreads();  // warp_amax is rewritten for the next row
          return amax;
        });
  }
}

// A warp per row (per tensor, or block scaling with many rows), or per chunk
// of a row (block scaling, kSplit: few rows). kTensor: per-tensor scaling.
// Each combination is its own instance: register use of one path must not
// cost the others occupancy.
template <class T, class Source, bool kSplit, bool kTensor>
__global__ void __launch_bounds__(kThreads) quantize_rows_kernel(
    Source src, const int32_t* __restrict__ offsets, int num_experts, int64_t k,
    const float* __restrict__ static_scale,  // per tensor: the static scale, or null (dynamic)
    const float* __restrict__ w_scale,                            // [E] per tensor, else unused
    uint8_t* __restrict__ out,                                    // [rows, K] e4m3
    float* __restrict__ scales, int64_t chunk_groups, int64_t max_rows) {
  timeline::Scope timeline_scope(timeline::kQuantize);  // MOEKIT_TIMELINE builds only
  static_assert(!(kSplit && kTensor), "per tensor with few rows: quantize_rows_tensor_kernel");
  pdl_wait();  // the sort's maps (gather) or GEMM 1's output (activation)
  pdl_launch_dependents();
  const int lane = threadIdx.x % 32;
  const int64_t groups = fp8_blocks(k);
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarps;
  // Work items: a whole row, or a row's chunk of chunk_groups groups, so
  // that a few long rows (decode, I = 14336) still spread over many warps
  // instead of one warp walking each row group after group.
  const int64_t chunks = kSplit ? (groups + chunk_groups - 1) / chunk_groups : 1;
  const int64_t first_item = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  // The first item's source is looked up beside the offsets (first_row).
  const typename Source::Row first_in = first_row(src, kSplit ? first_item / chunks : first_item, max_rows, k);
  __shared__ int32_t cached_offsets[kCachedExperts + 1];
  // Null offsets come only with rows quantized as they are (the layer's input, once per token).
  constexpr bool kMayBeOneGroup = !kTensor && std::is_same_v<Source, RowSource<T>>;
  const ExpertOffsets offset = kMayBeOneGroup && offsets == nullptr
                                   ? one_group_offsets(cached_offsets, max_rows)
                                   : cache_offsets(offsets, num_experts, cached_offsets);
  const int64_t valid = offset(num_experts);
  for (int64_t item = first_item; item < valid * chunks; item += warps) {
    const int64_t row = kSplit ? item / chunks : item;
    const int64_t chunk = kSplit ? item - row * chunks : 0;
    const int e = last_at_most(offset, num_experts, row);
    const int64_t first = offset(e), rows_e = offset(e + 1) - first;
    float* sc = scales + first * groups + (row - first);  // column-major [groups, rows_e]
    const typename Source::Row in = item == first_item ? first_in : src.row(row, k);
    uint8_t* dst = out + row * k;
    if constexpr (kTensor) {
      quantize_row_tensor<0>(src, in, k, 32, lane, static_scale, __ldg(w_scale + e), dst, sc, rows_e, groups,
                             [](float amax) { return lanes_max<32>(amax); });
      continue;
    }
    // FP8_BLOCK: one scale per 128 columns, the chunk's groups (quantize_groups).
    quantize_groups(src, in, k, dst, sc, rows_e, chunk * chunk_groups,
                    kSplit ? std::min(groups, (chunk + 1) * chunk_groups) : groups, 2 * Source::kSteps);
  }
}

__global__ void fill_ones_kernel(float* out, int64_t count) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = 1.0f;
}

template <class Source, class T>
cudaError_t launch(const Source& src, const QuantRows& q, int64_t max_rows, int64_t k,
                   const DeviceInfo& dev, cudaStream_t stream) {
  // Few rows: block scaling splits rows into chunks, per tensor takes a block a row.
  const bool split = max_rows < kWholeRowsFrom * dev.sm_count;
  const bool tensor = q.kind == MOEKIT_QUANT_FP8_TENSOR;
  if (tensor && q.expert_offsets == nullptr) return cudaErrorNotSupported;  // one group: block scaling only
  if (tensor && split) {
    // A lane per 8 columns, whole warps, at most kRowBlockThreads.
    const int64_t lanes = std::min<int64_t>(kRowBlockThreads, ((k + kLaneCols - 1) / kLaneCols + 31) / 32 * 32);
    return launch_pdl(quantize_rows_tensor_kernel<T, Source>, dim3(grid_for(max_rows, dev.sm_count, 16)),
                      dim3(static_cast<unsigned>(lanes)), 0, stream, src, q.expert_offsets, q.num_experts, k,
                      q.static_scale, q.w_scale, q.out, q.scales, max_rows);
  }
  const int64_t groups = fp8_blocks(k);
  const int64_t chunk_groups = split ? 2 * Source::kSteps : groups;
  const int64_t items = max_rows * ((groups + chunk_groups - 1) / chunk_groups);
  const unsigned grid = grid_for((items + kWarps - 1) / kWarps, dev.sm_count, 16);  // a warp per item
  // Whole rows get their own instance: the chunk arithmetic cost the prefill
  // gather 50% (qwen3 T = 4096: 91 -> 144 us on an H200).
  auto go = [&](auto split_tag, auto tensor_tag) {
    return launch_pdl(
        quantize_rows_kernel<T, Source, decltype(split_tag)::value, decltype(tensor_tag)::value>,
        dim3(grid), dim3(kThreads), 0, stream, src, q.expert_offsets, q.num_experts, k,
        q.static_scale, q.w_scale, q.out, q.scales, chunk_groups, max_rows);
  };
  if (tensor) return go(std::false_type{}, std::true_type{});
  if (split) return go(std::true_type{}, std::false_type{});
  return go(std::false_type{}, std::false_type{});
}

}  // namespace

cudaError_t fill_ones(float* out, int64_t count, cudaStream_t stream) {
  const int64_t blocks = (count + 255) / 256;
  fill_ones_kernel<<<static_cast<unsigned>(blocks < 1024 ? (blocks < 1 ? 1 : blocks) : 1024), 256, 0,
                     stream>>>(out, count);
  return cudaGetLastError();
}

cudaError_t launch_permute_quant(const void* hidden, moekit_dtype_t dtype,
                                 const int32_t* sorted_pairs, const float* pair_weights,
                                 int64_t top_k, int64_t hidden_size,
                                 const QuantRows& q, int64_t max_rows, const DeviceInfo& dev,
                                 cudaStream_t stream) {
  cudaError_t e = cudaErrorNotSupported;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (sizeof(T) == 2) {
      const GatherSource<T> src{static_cast<const T*>(hidden), sorted_pairs, pair_weights, top_k};
      e = launch<GatherSource<T>, T>(src, q, max_rows, hidden_size, dev, stream);
    }
  });
  return e;
}

cudaError_t launch_quantize_rows(const void* rows, moekit_dtype_t dtype, int64_t k, const QuantRows& q,
                                 int64_t max_rows, const DeviceInfo& dev, cudaStream_t stream) {
  cudaError_t e = cudaErrorNotSupported;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (sizeof(T) == 2) e = launch<RowSource<T>, T>({static_cast<const T*>(rows)}, q, max_rows, k, dev, stream);
  });
  return e;
}

cudaError_t launch_activation_quant(const void* gemm1, moekit_dtype_t dtype, int64_t inter,
                                    const ActivationParams& p, moekit_gate_up_order_t order,
                                    const QuantRows& q, int64_t max_rows, const DeviceInfo& dev,
                                    cudaStream_t stream) {
  cudaError_t e = cudaErrorNotSupported;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (sizeof(T) == 2) {
      const ActivationSource<T> src{static_cast<const T*>(gemm1), inter, p, order};
      e = launch<ActivationSource<T>, T>(src, q, max_rows, inter, dev, stream);
    }
  });
  return e;
}

}  // namespace moekit::kernels
