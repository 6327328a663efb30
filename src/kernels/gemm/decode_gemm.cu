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
//  - A persistent grid, as many CTAs per SM as fit (two with the full ring
//    of 9 slots). Work items are (expert, 16- or 32-token
//    pass, 64-row weight slice); each CTA walks items blockIdx.x, +gridDim.x,
//    ... . Only experts with rows have items, found from expert_offsets by a
//    block scan.
//  - Programmatic dependent launch: the launch, barrier set-up, descriptor
//    prefetch, the scan and the first ring of weight tiles all overlap the
//    previous kernel; only the token tiles and the stores wait for it.
//  - One producer thread streams (64 weight rows x 128 bytes of k) and (16
//    or 32 token rows x 128 bytes) tiles with TMA (128-byte swizzle) into a ring of shared
//    slots; four consumer warps take 16 weight rows each through ldmatrix
//    into mma.sync m16n8k16 (weights on M, tokens on N: swap-AB) and write
//    D^T back as row-major D. Weights are loaded evict-first: read once.
//  - 32-token passes (decode_pass_tokens: above 8 rows per expert) stream
//    an expert of 9-32 rows once; at up to 24 rows per expert on small
//    experts that beats CUTLASS's 64x256 tiles (select_config).
//  - For GEMM 1 the epilogue can apply the activation instead (Epilogue),
//    so the layer skips the activation stage at decode (fp8 layers: a
//    plain quantize stage then reads half the bytes of the
//    activation-quantize stage). GEMM 2 quantizing its own 16-bit rows
//    stage by stage (one launch fewer for fp8) lost 20-56% and was removed
//    (bench/RESULTS.md, 2026-12-05).
//  - e4m3 operands with block scales (fp8 layers) run the same pipeline:
//    a 128-byte box row is 128 k, one scale block, so a stage is one block.
//    The four consumer warps are one warpgroup and run wgmma m64n16k32 (or n32) on
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
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>

#include "cute/arch/copy_sm90_desc.hpp"
#include "cute/arch/copy_sm90_tma.hpp"
#include "cute/arch/mma_sm90_gmma.hpp"
#include "cutlass/arch/barrier.h"

#include "common/activation_math.hpp"
#include "kernels/common.cuh"
#include "kernels/gemm/grouped_gemm_sm90.hpp"
#include "kernels/gemm/tma_tiles.cuh"

namespace moekit::kernels {

namespace {

constexpr int kConsumerWarps = 4;
constexpr int kThreads = 32 * (kConsumerWarps + 1);  // + one producer warp
constexpr int kRowsPerWarp = 16;                      // mma M: weight rows (output columns)
constexpr int kSliceRows = kConsumerWarps * kRowsPerWarp;  // 64 weight rows per item
// Token rows per pass (kTok): 16 (two mma n8 blocks) or 32 (four), decode_pass_tokens.
using tma::kBoxBytes;
using tma::kSwizzleAlign;
constexpr int kWeightBoxBytes = kSliceRows * kBoxBytes;  // 8 KB
constexpr int kMmaBytes = 32;                         // k bytes of one mma: k16 bf16/fp16, k32 e4m3

// One pipeline stage: a 64-deep box of the weight tile and of the token tile.
// Measured on an H200 (bench/RESULTS.md, 2026-12-01): two boxes a stage (256
// contiguous bytes of each weight row at a time), fewer stages, or weights
// loaded evict-normal all ran the decode layer 0-4% slower than this.
template <int kTok>
constexpr int kStageBytes = decode_slot_bytes(kTok);
static_assert(kStageBytes<16> == kWeightBoxBytes + 16 * kBoxBytes && kStageBytes<32> % kSwizzleAlign == 0);
constexpr int kMaxStages = kDecodeMaxStages;  // 90 KB a CTA at 16 tokens
constexpr int kMaxCtasPerSm = 4;
constexpr uint64_t kWeightHint = static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_FIRST);
constexpr uint64_t kTokenHint = static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_LAST);

// Shared memory after the stages: the barriers, then expert_offsets and each
// expert's first work unit (both [E + 1]).
size_t smem_bytes(int num_experts, int stages, int stage_bytes) {
  return kSwizzleAlign + static_cast<size_t>(stages) * stage_bytes + 2 * stages * sizeof(uint64_t) +
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

// One stage of e4m3 operands on the consumer warpgroup: part = the 64 weight
// rows x kTok tokens of this 128-deep block, four wgmma k32 steps (the first
// overwrites part), as CUTLASS's blockwise mainloop issues them.
// part[j][i] is laid out like mma.sync's D (acc below), for n8 block j.
template <int kTok>
__device__ __forceinline__ void wgmma_block(float (&part)[kTok / 8][4], uint32_t w_tile, uint32_t a_tile) {
  using cute::SM90::GMMA::ScaleOut;
  const uint64_t dw = tma::smem_descriptor(w_tile), da = tma::smem_descriptor(a_tile);
  float* d = &part[0][0];
#pragma unroll
  for (int i = 0; i < kTok / 2; ++i) cute::warpgroup_fence_operand(d[i]);
  cute::warpgroup_arrive();
#pragma unroll
  for (int kk = 0; kk < kBoxBytes / kMmaBytes; ++kk) {  // +32 bytes of k: +2 in the 16-byte address field
    const ScaleOut acc = kk == 0 ? ScaleOut::Zero : ScaleOut::One;
    if constexpr (kTok == 16)
      cute::SM90::GMMA::MMA_64x16x32_F32E4M3E4M3_SS_TN<>::fma(dw + 2 * kk, da + 2 * kk, d[0], d[1], d[2], d[3],
                                                              d[4], d[5], d[6], d[7], acc);
    else
      cute::SM90::GMMA::MMA_64x32x32_F32E4M3E4M3_SS_TN<>::fma(
          dw + 2 * kk, da + 2 * kk, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9], d[10], d[11],
          d[12], d[13], d[14], d[15], acc);
  }
  cute::warpgroup_commit_batch();
  cute::warpgroup_wait<0>();
#pragma unroll
  for (int i = 0; i < kTok / 2; ++i) cute::warpgroup_fence_operand(d[i]);
}

// Byte offset of 16-byte chunk `chunk` of row `row` in a tile TMA wrote with
// the 128-byte swizzle (rows of 128 B, tile 1024-byte aligned).
__device__ __forceinline__ uint32_t swizzled(int row, int chunk) {
  return static_cast<uint32_t>(row * 128 + ((chunk ^ (row & 7)) << 4));
}

// Fused epilogue (tma::Epilogue, GEMM 1 only): round acc + bias as GEMM 1
// would store it, stage the tile in shared memory and store the activation
// instead: 32 output columns an item for the gated kinds (32 gate and 32 up
// weight rows; split halves: one 4-D box holds rows j.. of both halves), 64
// otherwise. The staged tile is laid out like a GEMM 1 row of an
// intermediate size of 32, so gate_column / up_column and the activation
// formulas are the activation stage's own, and the result is bitwise the same.
using tma::Epilogue;
using tma::Scales;
constexpr int kGatedCols = kSliceRows / 2;

__device__ __forceinline__ void consumer_barrier() {
  asm volatile("bar.sync 1, %0;" ::"n"(32 * kConsumerWarps) : "memory");
}

template <class T, class Op, int kTok>
__global__ void __launch_bounds__(kThreads, 2) decode_gemm_kernel(
    const __grid_constant__ CUtensorMap w_map,  // [E, N, K] weights, box (128 B of k, 64 rows, 1)
    const __grid_constant__ CUtensorMap a_map,  // [rows, K] expert-ordered rows, box (128 B of k, kTok rows)
    const int32_t* __restrict__ offsets,        // [E + 1]
    int num_experts,
    const T* __restrict__ bias,                 // [E, N] or null
    T* __restrict__ c,                          // [rows, N], or fused: [rows, inter]
    int n, int k, Epilogue ep, Scales sc,
    int stages,                                 // ring slots, <= kMaxStages
    DecodeRouting route) {                      // pairs > 0: offsets from ranking these ids
  timeline::Scope timeline_scope(timeline::kGemmDecode);  // MOEKIT_TIMELINE builds only
  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  unsigned char* base = smem_raw + ((kSwizzleAlign - raw % kSwizzleAlign) % kSwizzleAlign);
  constexpr int kStage = kStageBytes<kTok>;
  const uint32_t ring = static_cast<uint32_t>(__cvta_generic_to_shared(base));  // stages x kStage
  auto* full = reinterpret_cast<uint64_t*>(base + stages * kStage);              // [stages]
  uint64_t* empty = full + stages;                                                // [stages]
  auto* offs = reinterpret_cast<int32_t*>(empty + stages);                        // [E + 1]
  int32_t* first_unit = offs + num_experts + 1;                                   // [E + 1]
  __shared__ typename cub::BlockScan<int, kThreads>::TempStorage scan_storage;
  __shared__ alignas(16) uint16_t staged_raw[kTok * kSliceRows];  // fused: [kTok tokens, 64 rows]
  T* staged = reinterpret_cast<T*>(staged_raw);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // Everything up to pdl_wait() may overlap the previous kernel on the
  // stream. expert_offsets come from the sort, two or more kernels back: the
  // layer's kernels call pdl_launch_dependents() only after their own
  // pdl_wait(), so when this kernel starts, every kernel before the previous
  // one has finished. The weights are the caller's inputs. So the offsets
  // and the first stages' weights are read before the wait; the token rows
  // (the previous kernel's output) and every store come after it. Right
  // after launch_sort_gather_tiny the sort is the previous kernel, so the
  // offsets come from ranking the ids (route) instead.
  tma::start_block<kThreads>(full, empty, stages, kConsumerWarps, &w_map, &a_map, offsets, route, offs,
                             first_unit, num_experts, kTok, scan_storage);
  const bool gated = ep.fused && activation_is_gated(ep.act.kind);
  const int item_cols = gated ? kGatedCols : kSliceRows;  // fused: activation columns an item writes
  const int slices = ep.fused ? (ep.inter + item_cols - 1) / item_cols : (n + kSliceRows - 1) / kSliceRows;
  // First weight coordinate of a slice: a row of w (3-D map) or of each half (4-D map).
  const int slice_step = ep.split_halves ? kGatedCols : kSliceRows;
  const int64_t items = static_cast<int64_t>(first_unit[num_experts]) * slices;
  const int k_stages = (k + kStageK<Op> - 1) / kStageK<Op>;
  const tma::Items it{first_unit, offs, num_experts, kTok, slices, slice_step, k_stages, items};

  if (warp == kConsumerWarps) {
    // Producer: one thread walks the same (item, k-stage) sequence as the
    // consumers, a ring ahead.
    if (lane == 0)
      tma::produce(
          it, empty, stages,
          [&](int slot, const tma::Cursor& cur) {
            Barrier::arrive_and_expect_tx(&full[slot], kStage);
            tma::load_weight_box(&w_map, &full[slot], kWeightHint, base + slot * kStage,
                                 cur.kb * kStageK<Op>, cur, ep.split_halves);
          },
          [&](int slot, const tma::Cursor& cur) {
            unsigned char* dst = base + slot * kStage + kWeightBoxBytes;
            cute::SM90_TMA_LOAD_2D::copy(&a_map, &full[slot], kTokenHint, dst, cur.kb * kStageK<Op>,
                                         cur.u.begin + cur.u.row0);
          });
  } else {
    const int g = lane / 4, q = lane % 4;
    constexpr int kBlocks = kTok / 8;  // mma n8 blocks of tokens
    // ldmatrix addresses: A rows (this warp's 16 weight rows) and B rows
    // (tokens 0-15, +16 for the second half of 32), each at its first
    // 16-byte chunk of a k16 step.
    const int a_row = warp * kRowsPerWarp + lane % 16, a_chunk = lane / 16;
    const int b_row = (lane / 16) * 8 + lane % 8, b_chunk = (lane / 8) % 2;
    pdl_wait();  // before the first store
    int slot = 0;
    uint32_t phase = 0;
    for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
      const tma::Cursor cur = tma::cursor_at(it, item);  // the item as the producer loads it
      const tma::Unit& u = cur.u;
      const int slice = static_cast<int>(item % slices);
      const int w_row0 = slice * kSliceRows + warp * kRowsPerWarp;  // unfused: D columns
      const int blocks = min(kBlocks, (u.rows - u.row0 + 7) / 8);  // warp-uniform: n8 blocks with tokens
      float acc[kBlocks][4] = {};
      // e4m3: this thread's scales of a block: its weight rows' (one 128-row
      // block: the warp's 16 rows start at a multiple of 16) and its 4 tokens'.
      const float* sa_e = kIsFp8<Op> ? sc.a + static_cast<int64_t>(u.begin) * k_stages : nullptr;
      // With split halves (fused GEMM 1) the warp's 16 rows are rows j.. of
      // the gate half (warps 0-1) or of the up half (warps 2-3), 16-aligned
      // (decode_grouped_gemm), so inside one 128-row scale block either way.
      const int w_scale_row = ep.split_halves
                                  ? (warp / 2) * ep.inter + slice * kGatedCols + (warp % 2) * kRowsPerWarp
                                  : w_row0;
      const float* sw_e = kIsFp8<Op> && sc.w != nullptr
                              ? sc.w + u.expert * sc.w_stride + static_cast<int64_t>(w_scale_row / 128) * k_stages
                              : nullptr;
      for (int kb = 0; kb < k_stages; ++kb) {
        float scale[kBlocks][2];
        if constexpr (kIsFp8<Op>) {  // issued before the wait: the loads overlap it
          const float sw = sw_e != nullptr ? __ldg(sw_e + kb) : 1.0f;
#pragma unroll
          for (int j = 0; j < kBlocks; ++j)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const int t = u.row0 + 8 * j + 2 * q + h;
              scale[j][h] = t < u.rows ? __ldg(sa_e + static_cast<int64_t>(kb) * u.rows + t) * sw : 0.0f;
            }
        }
        Barrier::wait(&full[slot], phase);
        if constexpr (MOEKIT_TIMELINE)  // when the warp's first stage arrived
          if (item == blockIdx.x && kb == 0) timeline::mark(timeline::kGemmDecode, timeline::kFirstStage);
        const uint32_t w_tile = ring + slot * kStage;
        const uint32_t a_tile = w_tile + kWeightBoxBytes;
        float part[kBlocks][4];  // e4m3: this block's sum, scaled into acc below
        if constexpr (kIsFp8<Op>) {
          wgmma_block<kTok>(part, w_tile, a_tile);
        } else {
#pragma unroll
          for (int kk = 0; kk < kBoxBytes / kMmaBytes; ++kk) {
            uint32_t af[4];
            ldmatrix_x4(af, w_tile + swizzled(a_row, 2 * kk + a_chunk));
#pragma unroll
            for (int h = 0; h < kBlocks / 2; ++h) {  // 16 tokens: n8 blocks 2h, 2h + 1
              if (2 * h >= blocks) break;
              uint32_t bf[4];
              ldmatrix_x4(bf, a_tile + swizzled(b_row + 16 * h, 2 * kk + b_chunk));
              mma_16x8x16<Op>(acc[2 * h], af, bf[0], bf[1]);
              if (2 * h + 1 < blocks) mma_16x8x16<Op>(acc[2 * h + 1], af, bf[2], bf[3]);
            }
          }
        }
        __syncwarp();  // every lane's reads of this slot are done
        if (lane == 0) Barrier::arrive(&empty[slot]);
        if (++slot == stages) { slot = 0; phase ^= 1; }
        if constexpr (kIsFp8<Op>) {
#pragma unroll
          for (int j = 0; j < kBlocks; ++j)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[j][i] = fmaf(part[j][i], scale[j][i & 1], acc[j][i]);
        }
      }
      // D^T fragment of block j: acc[j][0..1] at weight row g of this warp's
      // 16, tokens row0 + 8j + 2q, +1; acc[j][2..3] at weight row g + 8.
      if constexpr (MOEKIT_TIMELINE) timeline::mark(timeline::kGemmDecode, timeline::kItemMath);
      const T* bias_e = bias ? bias + static_cast<int64_t>(u.expert) * n : nullptr;
      if (!ep.fused) {
#pragma unroll
        for (int j = 0; j < kBlocks; ++j)
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const int r = w_row0 + g + (i < 2 ? 0 : 8);
            const int t = u.row0 + 8 * j + 2 * q + (i & 1);
            if (r >= n || t >= u.rows) continue;
            const float b = bias_e ? to_float(bias_e[r]) : 0.0f;
            c[static_cast<int64_t>(u.begin + t) * n + r] = from_float<T>(acc[j][i] + b);
          }
        if constexpr (MOEKIT_TIMELINE) timeline::mark(timeline::kGemmDecode, timeline::kItemStored);
        continue;
      }
      // Fused: GEMM 1's values as it would store them, [kTok tokens, 64 local rows].
#pragma unroll
      for (int j = 0; j < kBlocks; ++j)
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
        const int j0 = (threadIdx.x % 8) * per;
        for (int t = threadIdx.x / 8; t < kTok && u.row0 + t < u.rows; t += 32 * kConsumerWarps / 8) {
          const T* row = staged + t * kSliceRows;
          T* out = c + static_cast<int64_t>(u.begin + u.row0 + t) * ep.inter + slice * item_cols;
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
      if constexpr (MOEKIT_TIMELINE) timeline::mark(timeline::kGemmDecode, timeline::kItemStored);
    }
  }
  // Every thread triggers only after its own wait (the layer's rule,
  // common.cuh). The producer warp's other 31 lanes get here without
  // having waited; a trigger from them could start the next kernel before
  // the kernel before this one has finished, and the decode GEMM reads
  // expert_offsets early on the strength of that rule.
  pdl_wait();
  pdl_launch_dependents();
}

}  // namespace

namespace {

// Ring slots: decode_ring_stages (gemm_config.hpp), by expert size. Six
// slots at three CTAs per SM carry about the bytes in flight of nine at two,
// from one more consumer, which keeps more stages streaming while each waits
// on its MMAs (e4m3: and on its block's scale loads). Measured on an H200
// (2026-12-03, layer µs, 9 vs 6 slots for both GEMMs): qwen3 (fp8 experts of
// 1.5 and 3 MiB) T=1 26.9 / 26.0, T=8 88.2 / 83.6, T=64 177.6 / 170.8 and
// 191.1 / 175.1; qwen3 bf16 (3 and 6 MiB) T=1 32.6 / 32.4, T=8 139.2 /
// 137.5, T=64 295.0 / 291.2; but deepseek-v3 fp8 (15 and 29 MiB) T=64 2367
// / 2580, mixtral fp8 (58 and 117 MiB) T=8 316 / 325 and mixtral bf16 T=1
// 187 / 201, where two CTAs already stream at the copy rate.
// MOEKIT_DECODE_STAGES (2 up to the ring of kMaxStages 16-token slots)
// overrides the choice, for tuning.
int ring_stages(int64_t n, int64_t k, int elem_bytes, int pass_tokens) {
  static const int forced = [] {
    const char* s = std::getenv("MOEKIT_DECODE_STAGES");
    return s ? std::atoi(s) : 0;
  }();
  const int most = kMaxStages * kStageBytes<16> / decode_slot_bytes(pass_tokens);
  return forced >= 2 ? std::min(forced, most) : decode_ring_stages(n, k, elem_bytes, pass_tokens);
}

// Token rows per pass: the plan's (16 or 32), else decode_pass_tokens of
// rows / experts; MOEKIT_DECODE_TOKENS (16 or 32) overrides both, for tuning.
int pass_tokens(int planned, int64_t rows_capacity, int64_t num_experts) {
  static const int forced = [] {
    const char* s = std::getenv("MOEKIT_DECODE_TOKENS");
    const int v = s ? std::atoi(s) : 0;
    return v == 16 || v == 32 ? v : 0;
  }();
  if (forced != 0) return forced;
  if (planned == 16 || planned == 32) return planned;
  return decode_pass_tokens((rows_capacity + num_experts - 1) / num_experts);
}

// CTAs of `kernel` with `smem` dynamic bytes that fit on one SM (registers
// and shared memory), at most kMaxCtasPerSm.
// Read once per kernel and size (the size changes with E and the ring only).
template <auto kKernel>
int ctas_per_sm(size_t smem) {
  static std::atomic<uint64_t> cached{0};  // smem << 8 | ctas
  const uint64_t c = cached.load(std::memory_order_relaxed);
  if (c != 0 && (c >> 8) == smem) return static_cast<int>(c & 0xff);
  int ctas = 0;
  if (cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(smem_bytes(kDecodeMaxExperts, kMaxStages, kStageBytes<16>))) !=
          cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, kKernel, kThreads, smem) != cudaSuccess) {
    cudaGetLastError();
    ctas = 1;
  }
  ctas = std::max(1, std::min(ctas, kMaxCtasPerSm));
  cached.store(static_cast<uint64_t>(smem) << 8 | static_cast<uint64_t>(ctas), std::memory_order_relaxed);
  return ctas;
}

}  // namespace

cudaError_t decode_grouped_gemm(const GroupedGemmParams& p, int64_t rows_capacity, cudaStream_t stream,
                                const FusedActivation* fuse, int planned_tokens, const DecodeRouting& route) {
  const bool fp8 = p.a_scale != nullptr;  // e4m3 rows and weights with block scales
  if (!tma::operands_fit(p, rows_capacity, kDecodeMaxExperts) || p.gather_pairs != nullptr)
    return cudaErrorNotSupported;  // (rows come in expert order)
  if (route.pairs > kWarpRankPairs || (route.pairs > 0 && route.pl.num_local != p.num_experts))
    return cudaErrorNotSupported;
  const int elem_bytes = fp8 ? 1 : 2;
  Epilogue ep{};
  if (!tma::make_epilogue(fuse, p.n, &ep)) return cudaErrorNotSupported;
  // e4m3 weights: a warp's 16 rows must share one 128-row scale block, so
  // split halves need an intermediate size of a multiple of 16.
  if (fp8 && ep.split_halves && ep.inter % kRowsPerWarp != 0) return cudaErrorNotSupported;
  // Token rows per pass: select_config's, from the rows per expert as it counts them.
  const int tokens = pass_tokens(planned_tokens, rows_capacity, p.num_experts);
  CUtensorMap w_map{}, a_map{};
  // Split halves: one box holds rows j.. of the gate and the up half.
  if (!tma::encode_weights(&w_map, tma::map_type(p), p.w, p.num_experts, p.n, p.k, elem_bytes,
                           ep.split_halves ? 2 * kGatedCols : kSliceRows, ep.split_halves) ||
      !tma::encode_rows(&a_map, tma::map_type(p), p.a, rows_capacity, p.k, elem_bytes, tokens))
    return cudaErrorNotSupported;
  const Scales sc = tma::scales_of(p);
  const int stages = ring_stages(p.n, p.k, elem_bytes, tokens);
  const size_t smem = smem_bytes(p.num_experts, stages, decode_slot_bytes(tokens));

  // Items: at most min(E, rows) experts with rows, rows / tokens more passes, times the slices.
  const int64_t slices = (p.n + kSliceRows - 1) / kSliceRows;
  const int64_t units = std::min<int64_t>(p.num_experts, rows_capacity) + rows_capacity / tokens;

  auto launch_for = [&](auto out_tag, auto op_tag) {
    using T = decltype(out_tag);
    auto run = [&](auto tok) {
      constexpr auto kernel = decode_gemm_kernel<T, decltype(op_tag), decltype(tok)::value>;
      const int64_t grid = std::max<int64_t>(
          1, std::min<int64_t>(int64_t{ctas_per_sm<kernel>(smem)} * p.sm_count, units * slices));
      // One shared-memory limit for every form: the 16-token ring of kMaxStages is the largest.
      return tma::launch<T, kernel>(smem_bytes(kDecodeMaxExperts, kMaxStages, kStageBytes<16>),
                                    dim3(static_cast<unsigned>(grid)), dim3(kThreads), smem, stream, p, w_map,
                                    a_map, ep, sc, stages, route);
    };
    return tokens == 32 ? run(std::integral_constant<int, 32>{}) : run(std::integral_constant<int, 16>{});
  };
  return tma::for_types<Fp8>(p, launch_for);
}

}  // namespace moekit::kernels
