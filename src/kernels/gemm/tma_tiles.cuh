// Pieces the hand-written TMA + wgmma grouped GEMMs share (decode_gemm.cu,
// prefill_gemm.cu): tensor-map encoding on the host, wgmma shared-memory
// descriptors of 128-byte-swizzled tiles, and the work units over the
// experts that have rows. Included by those kernel files only.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdint>

#include <cub/block/block_scan.cuh>

#include "cute/arch/copy_sm90_desc.hpp"
#include "cute/arch/copy_sm90_tma.hpp"
#include "cute/arch/mma_sm90_desc.hpp"
#include "cutlass/arch/barrier.h"
#include "common/activation_math.hpp"
#include "kernels/common.cuh"
#include "kernels/gemm/grouped_gemm_sm90.hpp"
#include "kernels/sort/sort_keys.cuh"

namespace moekit::kernels::tma {

constexpr int kBoxBytes = 128;       // one 128-byte swizzle row: 64 bf16/fp16 or 128 e4m3
constexpr int kSwizzleAlign = 1024;  // a 128-byte swizzle atom is 8 rows x 128 B

// cuTensorMapEncodeTiled through the runtime's driver entry point, so the
// library links no libcuda (the CUDA path runs on machines with only a driver).
inline PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) !=
            cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return static_cast<PFN_cuTensorMapEncodeTiled_v12000>(nullptr);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// A row-major tensor of `rank` dims (dims[0] contiguous) tiled in
// boxes of box[] with the 128-byte swizzle; out-of-bounds elements read as 0.
inline bool encode(CUtensorMap* map, CUtensorMapDataType type, const void* ptr, int rank,
                   const cuuint64_t* dims, const cuuint64_t* strides_bytes, const cuuint32_t* box) {
  const PFN_cuTensorMapEncodeTiled_v12000 fn = encode_fn();
  if (fn == nullptr) return false;
  const cuuint32_t elem_strides[4] = {1, 1, 1, 1};
  return fn(map, type, static_cast<cuuint32_t>(rank), const_cast<void*>(ptr), dims, strides_bytes, box,
            elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// The weight map of a grouped GEMM over [E, N, K] (K contiguous) with boxes
// of (128 bytes of k, rows, 1), or, with split_halves, [E, 2, N/2, K] with
// boxes of (128 bytes of k, rows / 2, 2, 1): rows j.. of both halves of a
// gated GEMM 1 (gate and up) in one box.
inline bool encode_weights(CUtensorMap* map, CUtensorMapDataType type, const void* w, int64_t e,
                           int64_t n, int64_t k, int elem_bytes, int box_rows, bool split_halves) {
  const cuuint64_t row = static_cast<cuuint64_t>(k) * elem_bytes;
  const cuuint32_t box_k = static_cast<cuuint32_t>(kBoxBytes / elem_bytes);
  const cuuint64_t ck = static_cast<cuuint64_t>(k), cn = static_cast<cuuint64_t>(n),
                   ce = static_cast<cuuint64_t>(e);
  if (split_halves) {
    const cuuint64_t half = cn / 2;
    const cuuint64_t dims[4] = {ck, half, 2, ce}, strides[3] = {row, half * row, cn * row};
    const cuuint32_t box[4] = {box_k, static_cast<cuuint32_t>(box_rows / 2), 2, 1};
    return encode(map, type, w, 4, dims, strides, box);
  }
  const cuuint64_t dims[3] = {ck, cn, ce}, strides[2] = {row, cn * row};
  const cuuint32_t box[3] = {box_k, static_cast<cuuint32_t>(box_rows), 1};
  return encode(map, type, w, 3, dims, strides, box);
}

// The map over the expert-ordered rows [rows, K], boxes of (128 bytes of k, box_rows).
inline bool encode_rows(CUtensorMap* map, CUtensorMapDataType type, const void* a, int64_t rows,
                        int64_t k, int elem_bytes, int box_rows) {
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(k), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(k) * elem_bytes};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(kBoxBytes / elem_bytes), static_cast<cuuint32_t>(box_rows)};
  return encode(map, type, a, 2, dims, strides, box);
}

// A wgmma shared-memory descriptor of a K-major tile TMA wrote with the
// 128-byte swizzle (1024-byte aligned): 8-row groups 1024 bytes apart.
// +32 bytes of k is +2 in its address field.
__device__ __forceinline__ uint64_t smem_descriptor(uint32_t smem) {
  cute::GmmaDescriptor d;
  d.bitfield.start_address_ = static_cast<uint16_t>(smem >> 4);
  d.bitfield.leading_byte_offset_ = 1;  // unused with swizzling
  d.bitfield.stride_byte_offset_ = 1024 >> 4;
  d.bitfield.base_offset_ = 0;
  d.bitfield.layout_type_ = static_cast<uint8_t>(cute::SM90::GMMA::LayoutType::B128);
  return d.desc_;
}

// Work units: one unit is up to `unit_rows` consecutive rows of one expert.
// first_unit[e] (shared memory, [E + 1]) is the exclusive scan of units per
// expert over offs (shared memory, [E + 1]), so first_unit[E] is the count.
// Called by all kThreads threads of the block.
template <int kThreads>
__device__ __forceinline__ void scan_units(const int32_t* offs, int32_t* first_unit, int num_experts,
                                           int unit_rows,
                                           typename cub::BlockScan<int, kThreads>::TempStorage& storage) {
  int carry = 0;
  for (int e0 = 0; e0 <= num_experts; e0 += kThreads) {
    const int e = e0 + static_cast<int>(threadIdx.x);
    const int units = e < num_experts ? (offs[e + 1] - offs[e] + unit_rows - 1) / unit_rows : 0;
    int before = 0, chunk_total = 0;
    cub::BlockScan<int, kThreads>(storage).ExclusiveSum(units, before, chunk_total);
    if (e <= num_experts) first_unit[e] = carry + before;
    carry += chunk_total;
    __syncthreads();  // storage is reused by the next chunk
  }
}

// The kernels' common start, by all kThreads threads: thread 0 sets up the
// stage barriers (full: full_arrivals producer arrivals, one by default, plus
// the transaction bytes; empty: empty_arrivals consumer arrivals) and
// prefetches both tensor maps;
// then the block fills offs with the expert offsets and scans the units.
// It runs before the PDL wait: expert_offsets come from the sort, two or
// more kernels back (decode_gemm.cu), or, with a route, from ranking its
// ids, the layer's input (offs[e] = its keys below e, as the sort counts them).
template <int kThreads>
__device__ __forceinline__ void start_block(uint64_t* full, uint64_t* empty, int stages, int empty_arrivals,
                                            const CUtensorMap* w_map, const CUtensorMap* a_map,
                                            const int32_t* offsets, const DecodeRouting& route, int32_t* offs,
                                            int32_t* first_unit, int num_experts, int unit_rows,
                                            typename cub::BlockScan<int, kThreads>::TempStorage& storage,
                                            int full_arrivals = 1) {
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      Barrier::init(&full[s], full_arrivals);
      Barrier::init(&empty[s], empty_arrivals);
    }
    cutlass::arch::fence_barrier_init();
    cute::prefetch_tma_descriptor(reinterpret_cast<const cute::TmaDescriptor*>(w_map));
    cute::prefetch_tma_descriptor(reinterpret_cast<const cute::TmaDescriptor*>(a_map));
  }
  if (route.pairs > 0) {
    __shared__ uint32_t keys[kWarpRankPairs];
    if (threadIdx.x < kWarpRankPairs) {
      const int j = static_cast<int>(threadIdx.x);
      keys[j] = j < route.pairs ? local_key(route.ids64 != nullptr ? route.ids64[j] : route.ids[j], route.pl)
                                : 0xffffffffu;
    }
    __syncthreads();
    for (int e = static_cast<int>(threadIdx.x); e <= num_experts; e += kThreads)
      offs[e] = keys_below(keys, route.pairs, e);
  } else {
    for (int e = static_cast<int>(threadIdx.x); e <= num_experts; e += kThreads) offs[e] = offsets[e];
  }
  __syncthreads();
  scan_units<kThreads>(offs, first_unit, num_experts, unit_rows, storage);
}

// The expert, first row and rows of that expert, and the unit's first row
// within it: the expert is the last e with first_unit[e] <= unit (never an
// empty one).
struct Unit {
  int expert, begin, row0, rows;
};
__device__ __forceinline__ Unit find_unit(const int32_t* first_unit, const int32_t* offs, int num_experts,
                                          int unit, int unit_rows) {
  const int e = last_at_most([first_unit](int i) { return first_unit[i]; }, num_experts, unit);
  return {e, offs[e], (unit - first_unit[e]) * unit_rows, offs[e + 1] - offs[e]};
}

// The items of a kernel: units x column slices, item = unit * slices +
// slice; a slice's first weight coordinate is slice * slice_step (a row of
// w, or of each half with split halves). k_stages: stages per item.
struct Items {
  const int32_t* first_unit;
  const int32_t* offs;
  int num_experts, unit_rows, slices, slice_step, k_stages;
  int64_t count;
};
struct Cursor {
  int64_t item;
  int kb;  // stage within the item
  Unit u;
  int w_row0;
};
__device__ __forceinline__ Cursor cursor_at(const Items& it, int64_t item) {
  Cursor cur{item, 0, {}, 0};
  if (item < it.count) {
    cur.u = find_unit(it.first_unit, it.offs, it.num_experts, static_cast<int>(item / it.slices), it.unit_rows);
    cur.w_row0 = static_cast<int>(item % it.slices) * it.slice_step;
  }
  return cur;
}

// One weight box of stage cur.kb (k0 = its first k) into dst: 3-D map, or
// 4-D with split halves (encode_weights).
__device__ __forceinline__ void load_weight_box(const CUtensorMap* map, uint64_t* bar, uint64_t hint, void* dst,
                                                int k0, const Cursor& cur, bool split_halves) {
  if (split_halves)
    cute::SM90_TMA_LOAD_4D::copy(map, bar, hint, dst, k0, cur.w_row0, 0, cur.u.expert);
  else
    cute::SM90_TMA_LOAD_3D::copy(map, bar, hint, dst, k0, cur.w_row0, cur.u.expert);
}

// The producer thread: walks the consumers' (item, stage) sequence over
// items blockIdx.x, + gridDim.x, ..., a ring of `stages` slots ahead.
// load_weights(slot, cur) arms full[slot] for the whole stage and loads its
// weights; load_rows(slot, cur) loads its rows. The first `stages` stages'
// weights stream before the PDL wait (while the previous kernel finishes),
// their rows (the previous kernel's output) after it.
template <class W, class A>
__device__ __forceinline__ void produce(const Items& it, uint64_t* empty, int stages, W&& load_weights,
                                        A&& load_rows) {
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  auto advance = [&](Cursor& cur) {
    if (++cur.kb == it.k_stages) cur = cursor_at(it, cur.item + gridDim.x);
  };
  Cursor cur = cursor_at(it, blockIdx.x), pre = cur;
  int ahead = 0;
  for (; ahead < stages && cur.item < it.count; ++ahead, advance(cur)) load_weights(ahead, cur);
  pdl_wait();
  for (int s = 0; s < ahead; ++s, advance(pre)) load_rows(s, pre);
  int slot = 0;
  uint32_t phase = 1;  // every slot has been filled once
  for (; cur.item < it.count; advance(cur)) {
    Barrier::wait(&empty[slot], phase ^ 1);
    load_weights(slot, cur);
    load_rows(slot, cur);
    if (++slot == stages) { slot = 0; phase ^= 1; }
  }
}

// Block scales of the e4m3 form (gemm_params.hpp): a in QuantRows' layout,
// w [E, ceil(N/128), ceil(K/128)] at w + e * w_stride, or null for per-tensor
// scaling's block of ones (a factor of exactly 1, not read).
struct Scales {
  const float* a;
  const float* w;
  int64_t w_stride;
};
inline Scales scales_of(const GroupedGemmParams& p) {
  return {p.a_scale, p.w_scale_ones != nullptr ? nullptr : p.w_scale, p.w_scale_stride};
}

// What the consumers do with a tile's accumulators: store acc + bias as D,
// or (fused, GEMM 1 only) round acc + bias as GEMM 1 would store it and
// store the activation of it instead, bit for bit what the activation stage
// would write. split_halves: a gated GEMM 1 whose gate and up halves are
// separate (GATE_UP, UP_GATE), read through encode_weights' 4-D map.
struct Epilogue {
  int fused;
  int split_halves;
  ActivationParams act;
  moekit_gate_up_order_t order;
  int inter;
};

// The epilogue of fuse (null: unfused); false if GEMM 1's N does not fit it.
inline bool make_epilogue(const FusedActivation* fuse, int64_t n, Epilogue* ep) {
  *ep = Epilogue{};
  if (fuse == nullptr) return true;
  const bool gated = activation_is_gated(fuse->params.kind);
  if (n != (gated ? 2 : 1) * fuse->inter) return false;
  *ep = {1, gated && fuse->order != MOEKIT_INTERLEAVED, fuse->params, fuse->order,
         static_cast<int>(fuse->inter)};
  return true;
}

// Whether the TMA kernels can take p: 16-bit output, 1..max_experts experts,
// rows of a multiple of 16 bytes and 16-byte aligned bases, N a multiple of 8
// (pairs of output columns), every index in int32.
inline bool operands_fit(const GroupedGemmParams& p, int64_t rows_capacity, int64_t max_experts) {
  const int64_t elem_bytes = p.a_scale != nullptr ? 1 : 2;
  if (p.dtype != MOEKIT_DTYPE_BF16 && p.dtype != MOEKIT_DTYPE_FP16) return false;
  if (p.num_experts < 1 || p.num_experts > max_experts || rows_capacity < 1 ||
      rows_capacity > (int64_t{1} << 31) - 1)
    return false;
  if (p.n % 8 != 0 || (p.k * elem_bytes) % 16 != 0 || p.n < 1 || p.k < 1 || p.n > (1 << 30) ||
      p.k > (1 << 30))
    return false;
  return reinterpret_cast<uintptr_t>(p.a) % 16 == 0 && reinterpret_cast<uintptr_t>(p.w) % 16 == 0;
}

// The launch of a kernel of the common signature (both kernel files'),
// followed by the kernel's own parameters (extra): programmatic dependent
// launch, after raising its dynamic shared-memory limit to max_smem once per
// kernel (the largest expert count's, so one setting serves every call).
// T: the output element type.
template <class T, auto kKernel, class... Extra>
cudaError_t launch(size_t max_smem, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   const GroupedGemmParams& p, const CUtensorMap& w_map, const CUtensorMap& a_map,
                   const Epilogue& ep, const Scales& sc, const Extra&... extra) {
  static const cudaError_t opt_in =
      cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(max_smem));
  if (opt_in != cudaSuccess) return opt_in;
  return launch_pdl(kKernel, grid, block, smem, stream, w_map, a_map, p.expert_offsets, p.num_experts,
                    static_cast<const T*>(p.bias), static_cast<T*>(p.c), static_cast<int>(p.n),
                    static_cast<int>(p.k), ep, sc, extra...);
}

// f(T{}, Op{}) for p's output type T and operand kind Op: T itself for
// 16-bit operands, Fp8 (the kernel file's tag) for e4m3 with block scales.
template <class Fp8, class F>
cudaError_t for_types(const GroupedGemmParams& p, F&& f) {
  const bool fp8 = p.a_scale != nullptr;
  if (p.dtype == MOEKIT_DTYPE_BF16)
    return fp8 ? f(__nv_bfloat16{}, Fp8{}) : f(__nv_bfloat16{}, __nv_bfloat16{});
  return fp8 ? f(__half{}, Fp8{}) : f(__half{}, __half{});
}

// The operands' map type.
inline CUtensorMapDataType map_type(const GroupedGemmParams& p) {
  if (p.a_scale != nullptr) return CU_TENSOR_MAP_DATA_TYPE_UINT8;
  return p.dtype == MOEKIT_DTYPE_BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
}

}  // namespace moekit::kernels::tma
