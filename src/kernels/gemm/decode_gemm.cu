// Grouped GEMM for decode batches (a few rows per expert), written by hand
// because no library kernel fits: the CUTLASS ptr-array kernels spend about
// 9 µs per launch on set-up (per-group tensor-map rewrites, pipeline fill,
// epilogue store) and cannot overlap it with the kernel before them
// (CUTLASS 4.2's sm90 array kernels issue no griddepcontrol), which is most
// of a T = 1 layer (bench/RESULTS.md).
//
// Shape of the kernel:
//  - One tensor map over all experts' weights, [E, N, K] with the expert as
//    the third coordinate, and one over the expert-ordered rows [rows, K]:
//    encoded on the host once per call, never rewritten on the device.
//  - A persistent grid, two CTAs per SM. Work items are (expert, 16-token
//    pass, 64-row weight slice); each CTA walks items blockIdx.x, +gridDim.x,
//    ... . Only experts with rows have items, found from expert_offsets by a
//    block scan.
//  - Programmatic dependent launch: the launch, barrier set-up, descriptor
//    prefetch, the scan and the first kStages weight tiles all overlap the
//    previous kernel; only the token tiles and the stores wait for it.
//  - One producer thread streams (64 weight rows x 128 bytes of k) and (16
//    token rows x 128 bytes) tiles with TMA (128-byte swizzle) into a ring of kStages shared
//    slots; four consumer warps take 16 weight rows each through ldmatrix
//    into mma.sync m16n8k16 (weights on M, tokens on N: swap-AB) and write
//    D^T back as row-major D. Weights are loaded evict-first: read once.
//  - For GEMM 1 the epilogue can apply the activation instead (Epilogue),
//    so the layer skips the activation stage at decode.
//  - e4m3 operands with block scales (fp8 layers) run the same pipeline:
//    a 128-byte box row is 128 k, one scale block, so a stage is one block.
//    The four consumer warps are one warpgroup and run wgmma m64n16k32 on
//    the stage straight from shared memory: mma.sync on e4m3 accumulates
//    differently from wgmma (more exactly: it matched the fp32 CUDA-core
//    GEMM bit for bit where CUTLASS's wgmma kernels did not; H200,
//    2026-12-02), and batch invariance needs CUTLASS's bits, since the
//    larger fp8 batches run on its kernels.
//
// Arithmetic is that of the wgmma kernels: one fp32 accumulator per output,
// K in ascending chunks of 16 (e4m3: 32, the same wgmma) in natural order (a partial last
// chunk is zero-filled, as TMA does for them), bias added in fp32, one
// rounding. With block scales, as CUTLASS's FP8Blockwise mainloop: each
// 128-deep block sums into a zeroed partial accumulator, then
// acc = fma(partial, a_scale * w_scale, acc). The GPU suite checks that a
// token's row is bitwise the same whichever kernel ran, so choosing this
// kernel by batch size keeps batch invariance.
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cub/block/block_scan.cuh>

#include "cute/arch/copy_sm90_desc.hpp"
#include "cute/arch/copy_sm90_tma.hpp"
#include "cute/arch/mma_sm90_desc.hpp"
#include "cute/arch/mma_sm90_gmma.hpp"
#include "cutlass/arch/barrier.h"

#include "common/activation_math.hpp"
#include "kernels/common.cuh"
#include "kernels/gemm/grouped_gemm_sm90.hpp"

namespace moekit::kernels {

namespace {

constexpr int kConsumerWarps = 4;
constexpr int kThreads = 32 * (kConsumerWarps + 1);  // + one producer warp
constexpr int kRowsPerWarp = 16;                      // mma M: weight rows (output columns)
constexpr int kSliceRows = kConsumerWarps * kRowsPerWarp;  // 64 weight rows per item
constexpr int kTokens = 16;                           // token rows per pass: two mma n8 blocks
constexpr int kBoxBytes = 128;                        // one 128-byte swizzle row: 64 bf16 or 128 e4m3
constexpr int kWeightBoxBytes = kSliceRows * kBoxBytes;  // 8 KB
constexpr int kTokenBoxBytes = kTokens * kBoxBytes;      // 2 KB
constexpr int kMmaBytes = 32;                         // k bytes of one mma: k16 bf16/fp16, k32 e4m3
constexpr int kCtasPerSm = 2;
constexpr int kSwizzleAlign = 1024;  // a 128-byte swizzle atom is 8 rows x 128 B

// One pipeline stage: a 64-deep box of the weight tile and of the token tile.
// Measured on an H200 (bench/RESULTS.md, 2026-12-01): two boxes a stage (256
// contiguous bytes of each weight row at a time), fewer stages, or weights
// loaded evict-normal all ran the decode layer 0-4% slower than this.
constexpr int kStageBytes = kWeightBoxBytes + kTokenBoxBytes;
constexpr int kStages = 9;  // 90 KB a CTA: about 140 KB of weights in flight per SM
constexpr uint64_t kWeightHint = static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_FIRST);
constexpr uint64_t kTokenHint = static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_LAST);

// Shared memory after the stages: the barriers, then expert_offsets and each
// expert's first work unit (both [E + 1]).
size_t smem_bytes(int num_experts) {
  return kSwizzleAlign + static_cast<size_t>(kStages) * kStageBytes + 2 * kStages * sizeof(uint64_t) +
         2 * (static_cast<size_t>(num_experts) + 1) * sizeof(int32_t);
}

using Barrier = cutlass::arch::ClusterTransactionBarrier;

// The operands: Op is T (16-bit) or Fp8 (e4m3 bytes with block scales).
struct Fp8 {};
template <class Op>
constexpr bool kIsFp8 = std::is_same_v<Op, Fp8>;
template <class Op>
constexpr int kStageK = kBoxBytes / (kIsFp8<Op> ? 1 : 2);  // k of one stage: 64, or 128 (one scale block)

// One mma.sync over 16 k of 16-bit operands.
template <class T>
__device__ __forceinline__ void mma_16x8x16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                            uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem));
}

// A wgmma shared-memory descriptor of a K-major tile TMA wrote with the
// 128-byte swizzle (1024-byte aligned): 8-row groups 1024 bytes apart.
__device__ __forceinline__ uint64_t smem_descriptor(uint32_t smem) {
  cute::GmmaDescriptor d;
  d.bitfield.start_address_ = static_cast<uint16_t>(smem >> 4);
  d.bitfield.leading_byte_offset_ = 1;  // unused with swizzling
  d.bitfield.stride_byte_offset_ = 1024 >> 4;
  d.bitfield.base_offset_ = 0;
  d.bitfield.layout_type_ = static_cast<uint8_t>(cute::SM90::GMMA::LayoutType::B128);
  return d.desc_;
}

// One stage of e4m3 operands on the consumer warpgroup: part = the 64 weight
// rows x 16 tokens of this 128-deep block, four wgmma k32 steps (the first
// overwrites part), as CUTLASS's blockwise mainloop issues them.
// part[j][i] is laid out like mma.sync's D (acc below).
__device__ __forceinline__ void wgmma_block(float (&part)[2][4], uint32_t w_tile, uint32_t a_tile) {
  const uint64_t dw = smem_descriptor(w_tile), da = smem_descriptor(a_tile);
  float* d = &part[0][0];
#pragma unroll
  for (int i = 0; i < 8; ++i) cute::warpgroup_fence_operand(d[i]);
  cute::warpgroup_arrive();
#pragma unroll
  for (int kk = 0; kk < kBoxBytes / kMmaBytes; ++kk)  // +32 bytes of k: +2 in the 16-byte address field
    cute::SM90::GMMA::MMA_64x16x32_F32E4M3E4M3_SS_TN<>::fma(
        dw + 2 * kk, da + 2 * kk, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7],
        kk == 0 ? cute::SM90::GMMA::ScaleOut::Zero : cute::SM90::GMMA::ScaleOut::One);
  cute::warpgroup_commit_batch();
  cute::warpgroup_wait<0>();
#pragma unroll
  for (int i = 0; i < 8; ++i) cute::warpgroup_fence_operand(d[i]);
}

// Byte offset of 16-byte chunk `chunk` of row `row` in a tile TMA wrote with
// the 128-byte swizzle (rows of 128 B, tile 1024-byte aligned).
__device__ __forceinline__ uint32_t swizzled(int row, int chunk) {
  return static_cast<uint32_t>(row * 128 + ((chunk ^ (row & 7)) << 4));
}

// The expert, first token row and rows of work unit `unit` (one 16-token
// pass of one expert): first_unit is the exclusive scan of passes per expert,
// so the expert is the last e with first_unit[e] <= unit (never an empty one).
struct Unit {
  int expert, begin, token0, rows;
};
__device__ __forceinline__ Unit find_unit(const int32_t* first_unit, const int32_t* offs,
                                          int num_experts, int unit) {
  const int e = last_at_most([first_unit](int i) { return first_unit[i]; }, num_experts, unit);
  return {e, offs[e], (unit - first_unit[e]) * kTokens, offs[e + 1] - offs[e]};
}

// Block scales of the e4m3 form (gemm_params.hpp): a in QuantRows' layout,
// w [E, ceil(N/128), ceil(K/128)] at w + e * w_stride, or null for per-tensor
// scaling's block of ones (a factor of exactly 1).
struct Scales {
  const float* a;
  const float* w;
  int64_t w_stride;
};

// What the consumers do with an item's accumulators. Unfused: store
// acc + bias as D (64 weight rows = 64 output columns). Fused (GEMM 1 only):
// round acc + bias as GEMM 1 would store it, stage the tile in shared memory
// and store the activation instead: 32 output columns an item for the gated
// kinds (32 gate and 32 up weight rows; split_halves: w13 seen as
// [E, 2, I, K], so one 4-D box holds rows j.. of both halves), 64 otherwise.
// The staged tile is laid out like a GEMM 1 row of an intermediate size of
// 32, so gate_column / up_column and the activation formulas are the
// activation stage's own, and the result is bitwise the same.
struct Epilogue {
  int fused;
  int split_halves;
  ActivationParams act;
  moekit_gate_up_order_t order;
  int inter;
};
constexpr int kGatedCols = kSliceRows / 2;

__device__ __forceinline__ void consumer_barrier() {
  asm volatile("bar.sync 1, %0;" ::"n"(32 * kConsumerWarps) : "memory");
}

template <class T, class Op>
__global__ void __launch_bounds__(kThreads, kCtasPerSm) decode_gemm_kernel(
    const __grid_constant__ CUtensorMap w_map,  // [E, N, K] weights, box (128 B of k, 64 rows, 1)
    const __grid_constant__ CUtensorMap a_map,  // [rows, K] expert-ordered rows, box (128 B of k, 16 rows)
    const int32_t* __restrict__ offsets,        // [E + 1]
    int num_experts,
    const T* __restrict__ bias,                 // [E, N] or null
    T* __restrict__ c,                          // [rows, N], or fused: [rows, inter]
    int n, int k, Epilogue ep, Scales sc) {
  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  unsigned char* base = smem_raw + ((kSwizzleAlign - raw % kSwizzleAlign) % kSwizzleAlign);
  const uint32_t stages = static_cast<uint32_t>(__cvta_generic_to_shared(base));  // kStages x kStageBytes
  auto* full = reinterpret_cast<uint64_t*>(base + kStages * kStageBytes);        // [kStages]
  uint64_t* empty = full + kStages;                                               // [kStages]
  auto* offs = reinterpret_cast<int32_t*>(empty + kStages);                       // [E + 1]
  int32_t* first_unit = offs + num_experts + 1;                                   // [E + 1]
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  __shared__ alignas(16) uint16_t staged_raw[kTokens * kSliceRows];  // fused: [16 tokens, 64 rows]
  T* staged = reinterpret_cast<T*>(staged_raw);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      Barrier::init(&full[s], 1);
      Barrier::init(&empty[s], kConsumerWarps);
    }
    cutlass::arch::fence_barrier_init();
    cute::prefetch_tma_descriptor(reinterpret_cast<const cute::TmaDescriptor*>(&w_map));
    cute::prefetch_tma_descriptor(reinterpret_cast<const cute::TmaDescriptor*>(&a_map));
  }
  // Everything up to pdl_wait() may overlap the previous kernel on the
  // stream. expert_offsets come from the sort, two or more kernels back: the
  // layer's kernels call pdl_launch_dependents() only after their own
  // pdl_wait(), so when this kernel starts, every kernel before the previous
  // one has finished. The weights are the caller's inputs. So the offsets
  // and the first stages' weights are read before the wait; the token rows
  // (the previous kernel's output) and every store come after it.
  for (int e = threadIdx.x; e <= num_experts; e += kThreads) offs[e] = offsets[e];
  __syncthreads();
  int carry = 0;
  for (int e0 = 0; e0 <= num_experts; e0 += kThreads) {
    const int e = e0 + threadIdx.x;
    const int passes = e < num_experts ? (offs[e + 1] - offs[e] + kTokens - 1) / kTokens : 0;
    int before = 0, chunk_total = 0;
    Scan(scan_storage).ExclusiveSum(passes, before, chunk_total);
    if (e <= num_experts) first_unit[e] = carry + before;
    carry += chunk_total;
    __syncthreads();  // scan_storage is reused by the next chunk
  }
  const bool gated = ep.fused && activation_is_gated(ep.act.kind);
  const int item_cols = gated ? kGatedCols : kSliceRows;  // fused: activation columns an item writes
  const int slices = ep.fused ? (ep.inter + item_cols - 1) / item_cols : (n + kSliceRows - 1) / kSliceRows;
  // First weight coordinate of a slice: a row of w (3-D map) or of each half (4-D map).
  const int slice_step = ep.split_halves ? kGatedCols : kSliceRows;
  const int64_t items = static_cast<int64_t>(first_unit[num_experts]) * slices;
  const int k_stages = (k + kStageK<Op> - 1) / kStageK<Op>;

  if (warp == kConsumerWarps) {
    // Producer: one thread walks the same (item, k-stage) sequence as the
    // consumers, kStages ahead.
    if (lane == 0) {
      struct Cursor {
        int64_t item;
        int kb;
        Unit u;
        int row0;
      };
      auto at_item = [&](int64_t item) {
        Cursor cur{item, 0, {}, 0};
        if (item < items) {
          cur.u = find_unit(first_unit, offs, num_experts, static_cast<int>(item / slices));
          cur.row0 = static_cast<int>(item % slices) * slice_step;
        }
        return cur;
      };
      auto advance = [&](Cursor& cur) {
        if (++cur.kb == k_stages) cur = at_item(cur.item + gridDim.x);
      };
      auto load_weights = [&](int slot, const Cursor& cur) {
        Barrier::arrive_and_expect_tx(&full[slot], kStageBytes);
        if (ep.split_halves)
          cute::SM90_TMA_LOAD_4D::copy(&w_map, &full[slot], kWeightHint, base + slot * kStageBytes,
                                       cur.kb * kStageK<Op>, cur.row0, 0, cur.u.expert);
        else
          cute::SM90_TMA_LOAD_3D::copy(&w_map, &full[slot], kWeightHint, base + slot * kStageBytes,
                                       cur.kb * kStageK<Op>, cur.row0, cur.u.expert);
      };
      auto load_tokens = [&](int slot, const Cursor& cur) {
        cute::SM90_TMA_LOAD_2D::copy(&a_map, &full[slot], kTokenHint,
                                     base + slot * kStageBytes + kWeightBoxBytes, cur.kb * kStageK<Op>,
                                     cur.u.begin + cur.u.token0);
      };
      // The first kStages stages' weights stream while the previous kernel
      // finishes; their token tiles follow the wait (the same barriers
      // expect both).
      Cursor cur = at_item(blockIdx.x), pre = cur;
      int ahead = 0;
      for (; ahead < kStages && cur.item < items; ++ahead, advance(cur)) load_weights(ahead, cur);
      pdl_wait();
      for (int s = 0; s < ahead; ++s, advance(pre)) load_tokens(s, pre);
      int slot = 0;
      uint32_t phase = 1;  // every slot has been filled once
      for (; cur.item < items; advance(cur)) {
        Barrier::wait(&empty[slot], phase ^ 1);
        load_weights(slot, cur);
        load_tokens(slot, cur);
        if (++slot == kStages) { slot = 0; phase ^= 1; }
      }
    }
  } else {
    const int g = lane / 4, q = lane % 4;
    // ldmatrix addresses: A rows (this warp's 16 weight rows) and B rows
    // (tokens 0-15), each at its first 16-byte chunk of a k16 step.
    const int a_row = warp * kRowsPerWarp + lane % 16, a_chunk = lane / 16;
    const int b_row = (lane / 16) * 8 + lane % 8, b_chunk = (lane / 8) % 2;
    pdl_wait();  // before the first store
    int slot = 0;
    uint32_t phase = 0;
    for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
      const Unit u = find_unit(first_unit, offs, num_experts, static_cast<int>(item / slices));
      const int slice = static_cast<int>(item % slices);
      const int row0 = slice * kSliceRows + warp * kRowsPerWarp;  // unfused: D columns
      const bool two_blocks = u.rows - u.token0 > 8;  // warp-uniform: tokens 8-15 exist
      float acc[2][4] = {};
      // e4m3: this thread's scales of a block: its weight rows' (one 128-row
      // block: the warp's 16 rows start at a multiple of 16) and its 4 tokens'.
      const float* sa_e = kIsFp8<Op> ? sc.a + static_cast<int64_t>(u.begin) * k_stages : nullptr;
      const float* sw_e = kIsFp8<Op> && sc.w != nullptr
                              ? sc.w + u.expert * sc.w_stride + static_cast<int64_t>(row0 / 128) * k_stages
                              : nullptr;
      for (int kb = 0; kb < k_stages; ++kb) {
        float scale[2][2];
        if constexpr (kIsFp8<Op>) {  // issued before the wait: the loads overlap it
          const float sw = sw_e != nullptr ? __ldg(sw_e + kb) : 1.0f;
#pragma unroll
          for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const int t = u.token0 + 8 * j + 2 * q + h;
              scale[j][h] = t < u.rows ? __ldg(sa_e + static_cast<int64_t>(kb) * u.rows + t) * sw : 0.0f;
            }
        }
        Barrier::wait(&full[slot], phase);
        const uint32_t w_tile = stages + slot * kStageBytes;
        const uint32_t a_tile = w_tile + kWeightBoxBytes;
        float part[2][4];  // e4m3: this block's sum, scaled into acc below
        if constexpr (kIsFp8<Op>) {
          wgmma_block(part, w_tile, a_tile);
        } else {
#pragma unroll
          for (int kk = 0; kk < kBoxBytes / kMmaBytes; ++kk) {
            uint32_t af[4], bf[4];
            ldmatrix_x4(af, w_tile + swizzled(a_row, 2 * kk + a_chunk));
            ldmatrix_x4(bf, a_tile + swizzled(b_row, 2 * kk + b_chunk));
            mma_16x8x16<Op>(acc[0], af, bf[0], bf[1]);
            if (two_blocks) mma_16x8x16<Op>(acc[1], af, bf[2], bf[3]);
          }
        }
        __syncwarp();  // every lane's reads of this slot are done
        if (lane == 0) Barrier::arrive(&empty[slot]);
        if (++slot == kStages) { slot = 0; phase ^= 1; }
        if constexpr (kIsFp8<Op>) {
#pragma unroll
          for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[j][i] = fmaf(part[j][i], scale[j][i & 1], acc[j][i]);
        }
      }
      // D^T fragment of block j: acc[j][0..1] at weight row g of this warp's
      // 16, tokens token0 + 8j + 2q, +1; acc[j][2..3] at weight row g + 8.
      const T* bias_e = bias ? bias + static_cast<int64_t>(u.expert) * n : nullptr;
      if (!ep.fused) {
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const int r = row0 + g + (i < 2 ? 0 : 8);
            const int t = u.token0 + 8 * j + 2 * q + (i & 1);
            if (r >= n || t >= u.rows) continue;
            const float b = bias_e ? to_float(bias_e[r]) : 0.0f;
            c[static_cast<int64_t>(u.begin + t) * n + r] = from_float<T>(acc[j][i] + b);
          }
        continue;
      }
      // Fused: GEMM 1's values as it would store them, [16 tokens, 64 local rows].
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int r = warp * kRowsPerWarp + g + (i < 2 ? 0 : 8);  // local weight row
          const int t = 8 * j + 2 * q + (i & 1);
          const int w_row = ep.split_halves ? (r / kGatedCols) * ep.inter + slice * kGatedCols + r % kGatedCols
                                            : slice * kSliceRows + r;
          const bool valid = ep.split_halves ? slice * kGatedCols + r % kGatedCols < ep.inter : w_row < n;
          const float b = bias_e && valid ? to_float(bias_e[w_row]) : 0.0f;
          staged[t * kSliceRows + r] = from_float<T>(acc[j][i] + b);
        }
      consumer_barrier();
      {
        const int per = item_cols / 8;  // columns a thread computes: 4 gated, 8 otherwise
        const int t = threadIdx.x / 8, j0 = (threadIdx.x % 8) * per;
        if (u.token0 + t < u.rows) {
          const T* row = staged + t * kSliceRows;
          T* out = c + static_cast<int64_t>(u.begin + u.token0 + t) * ep.inter + slice * item_cols;
          for (int jj = 0; jj < per; ++jj) {
            const int j = j0 + jj;
            if (slice * item_cols + j >= ep.inter) break;
            const float v =
                gated ? apply_gated_activation(ep.act, to_float(row[gate_column(ep.order, j, kGatedCols)]),
                                               to_float(row[up_column(ep.order, j, kGatedCols)]))
                      : apply_activation(ep.act.kind, to_float(row[j]));
            out[j] = from_float<T>(v);
          }
        }
      }
      consumer_barrier();  // the staged tile is rewritten by the next item
    }
  }
  pdl_launch_dependents();
}

// cuTensorMapEncodeTiled through the runtime's driver entry point, so the
// library links no libcuda (the CUDA path runs on machines with only a driver).
PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
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
bool encode(CUtensorMap* map, CUtensorMapDataType type, const void* ptr, int rank,
            const cuuint64_t* dims, const cuuint64_t* strides_bytes, const cuuint32_t* box) {
  const PFN_cuTensorMapEncodeTiled_v12000 fn = encode_fn();
  if (fn == nullptr) return false;
  const cuuint32_t elem_strides[4] = {1, 1, 1, 1};
  return fn(map, type, static_cast<cuuint32_t>(rank), const_cast<void*>(ptr), dims, strides_bytes, box,
            elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace

cudaError_t decode_grouped_gemm(const GroupedGemmParams& p, int64_t rows_capacity, cudaStream_t stream,
                                const FusedActivation* fuse) {
  const bool fp8 = p.a_scale != nullptr;  // e4m3 a and w with block scales
  if (p.dtype != MOEKIT_DTYPE_BF16 && p.dtype != MOEKIT_DTYPE_FP16) return cudaErrorNotSupported;
  if (p.num_experts < 1 || p.num_experts > kDecodeMaxExperts || rows_capacity < 1 ||
      rows_capacity > (int64_t{1} << 31) - 1)
    return cudaErrorNotSupported;
  // TMA: rows of a multiple of 16 bytes, 16-byte aligned bases.
  const int64_t elem_bytes = fp8 ? 1 : 2;
  if (p.n % 8 != 0 || (p.k * elem_bytes) % 16 != 0 || p.n < 1 || p.k < 1 || p.n > (1 << 30) ||
      p.k > (1 << 30))
    return cudaErrorNotSupported;
  if (reinterpret_cast<uintptr_t>(p.a) % 16 != 0 || reinterpret_cast<uintptr_t>(p.w) % 16 != 0)
    return cudaErrorNotSupported;
  // The activation's fp8 quantization needs whole 128-column groups; the
  // fused epilogue is for 16-bit layers.
  if (fp8 && fuse != nullptr) return cudaErrorNotSupported;
  Epilogue ep{};
  if (fuse != nullptr) {
    const bool gated = activation_is_gated(fuse->params.kind);
    if (p.n != (gated ? 2 : 1) * fuse->inter) return cudaErrorNotSupported;
    ep = {1, gated && fuse->order != MOEKIT_INTERLEAVED, fuse->params, fuse->order,
          static_cast<int>(fuse->inter)};
  }
  const CUtensorMapDataType type = fp8 ? CU_TENSOR_MAP_DATA_TYPE_UINT8
                                   : p.dtype == MOEKIT_DTYPE_BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                                                  : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  const cuuint32_t box_k = static_cast<cuuint32_t>(kBoxBytes / elem_bytes);
  CUtensorMap w_map{}, a_map{};
  const cuuint64_t k = static_cast<cuuint64_t>(p.k), n = static_cast<cuuint64_t>(p.n);
  const cuuint64_t e = static_cast<cuuint64_t>(p.num_experts), row = k * elem_bytes;
  bool ok;
  if (ep.split_halves) {  // [E, 2, I, K]: one box = rows j.. of the gate and the up half
    const cuuint64_t half = n / 2;
    const cuuint64_t dims[4] = {k, half, 2, e}, strides[3] = {row, half * row, n * row};
    const cuuint32_t box[4] = {box_k, kGatedCols, 2, 1};
    ok = encode(&w_map, type, p.w, 4, dims, strides, box);
  } else {  // [E, N, K]
    const cuuint64_t dims[3] = {k, n, e}, strides[2] = {row, n * row};
    const cuuint32_t box[3] = {box_k, kSliceRows, 1};
    ok = encode(&w_map, type, p.w, 3, dims, strides, box);
  }
  const cuuint64_t a_dims[2] = {k, static_cast<cuuint64_t>(rows_capacity)}, a_strides[1] = {row};
  const cuuint32_t a_box[2] = {box_k, kTokens};
  if (!ok || !encode(&a_map, type, p.a, 2, a_dims, a_strides, a_box)) return cudaErrorNotSupported;
  // Per-tensor scaling passes a block of ones (w_scale_ones): a factor of 1, not read.
  const Scales sc{p.a_scale, p.w_scale_ones != nullptr ? nullptr : p.w_scale, p.w_scale_stride};

  // Items: at most min(E, rows) experts with rows, rows / 16 more passes, times the slices.
  const int64_t slices = (p.n + kSliceRows - 1) / kSliceRows;
  const int64_t units = std::min<int64_t>(p.num_experts, rows_capacity) + rows_capacity / kTokens;
  const int64_t grid = std::max<int64_t>(1, std::min<int64_t>(int64_t{kCtasPerSm} * p.sm_count, units * slices));

  auto launch = [&](auto out_tag, auto op_tag) {
    using T = decltype(out_tag);
    using Op = decltype(op_tag);
    // Above 48 KB of shared memory needs an opt-in, once per kernel (for the
    // largest expert count, so one setting serves every call).
    static const cudaError_t opt_in = cudaFuncSetAttribute(
        decode_gemm_kernel<T, Op>, cudaFuncAttributeMaxDynamicSharedMemorySize,
        static_cast<int>(smem_bytes(kDecodeMaxExperts)));
    if (opt_in != cudaSuccess) return opt_in;
    return launch_pdl(decode_gemm_kernel<T, Op>, dim3(static_cast<unsigned>(grid)), dim3(kThreads),
                      smem_bytes(p.num_experts), stream, w_map, a_map, p.expert_offsets,
                      p.num_experts, static_cast<const T*>(p.bias), static_cast<T*>(p.c),
                      static_cast<int>(p.n), static_cast<int>(p.k), ep, sc);
  };
  if (p.dtype == MOEKIT_DTYPE_BF16)
    return fp8 ? launch(__nv_bfloat16{}, Fp8{}) : launch(__nv_bfloat16{}, __nv_bfloat16{});
  return fp8 ? launch(__half{}, Fp8{}) : launch(__half{}, __half{});
}

}  // namespace moekit::kernels
