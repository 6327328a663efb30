// Grouped GEMM for batches with many rows per expert, written by hand on the
// pieces of the decode kernel (tma_tiles.cuh), because the CUTLASS ptr-array
// kernels leave a third of the tensor cores idle on MoE shapes
// (bench/RESULTS.md: qwen3 prefill GEMMs at 480-543 TFLOP/s in bf16, fp8
// block-scaled ones at 576-763).
//
// Shape of the kernel:
//  - One tensor map over all experts' weights, [E, N, K] with the expert as
//    the third coordinate, and one over the expert-ordered rows [rows, K]:
//    no per-group tensor-map rewrite, no group set-up kernel. A tile's
//    128-row box may run past its expert's rows; those rows are computed
//    and never stored.
//  - A persistent grid, one CTA per SM, a producer warpgroup and two
//    consumer warpgroups (register budgets moved with setmaxnreg). Work items
//    are (expert, 128-row unit, column slice), slices of a unit adjacent, so
//    the CTAs that share a row tile or a weight tile run at the same time
//    and meet in L2.
//  - One producer thread streams (128 rows x 128 bytes of k) and (kCols
//    weight rows x 128 bytes) tiles with TMA into a ring of stages; each
//    consumer warpgroup runs wgmma over its 64 rows and all kCols columns
//    straight from the swizzled tiles, one batch in flight while it waits
//    for the one before. A warpgroup whose 64 rows are all past the
//    expert's (a last unit of at most 64 rows) skips its wgmmas.
//  - GEMM 1 can gather its rows itself (GroupedGemmParams::gather_pairs):
//    the producer warpgroup's 128 threads copy each stage's rows from the
//    layer's input (e4m3: the input quantized once per token, and its
//    scales read at the token) with cp.async into the same swizzled layout,
//    through the sort's row -> pair map, and the stage's barrier counts
//    their arrivals beside the weights' TMA bytes; the layer then runs no
//    gather stage.
//  - 16-bit operands: 128 x 256 tiles, k16 wgmmas. e4m3 with block scales:
//    128 x 128 tiles, a stage is one 128-deep scale block summed into a
//    partial accumulator and promoted (acc = fma(partial, a_scale * w_scale,
//    acc)) as in CUTLASS's blockwise mainloop.
//  - The epilogue stages 64-column chunks in shared memory and stores rows
//    with 16-byte writes.
//  - GEMM 1's activation can run in the epilogue (tma::Epilogue): the gate
//    and up columns of an output column are in the same thread (one box
//    holds rows j.. of both halves, or they are adjacent when interleaved).
//    With e4m3 operands too: the 16-bit activation is what the fp8 layer's
//    activation-quantize stage would quantize, bit for bit, so the layer
//    quantizes it as it is (launch_quantize_rows). Split halves then take
//    each half's weight scales (I % 64 == 0, so that a 64-row half lies in
//    one 128-row scale block; otherwise the kernel declines the activation).
//  - Programmatic dependent launch as in the decode kernel: the prologue and
//    the first stages' weights overlap the previous kernel (not when
//    gathering: that kernel is the sort, which writes the offsets).
//
// Arithmetic is that of the other kernels (one fp32 accumulator per output,
// K ascending in wgmma steps, block promotion as CUTLASS's FP8Blockwise,
// bias in fp32, one rounding), so a row's bits do not depend on which
// kernel ran; the GPU suite checks it.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>
#include <utility>

#include "cute/arch/copy_sm90_desc.hpp"
#include "cute/arch/copy_sm90_tma.hpp"
#include "cute/arch/mma_sm90_gmma.hpp"
#include "cutlass/arch/barrier.h"
#include "cutlass/arch/reg_reconfig.h"

#include "common/activation_math.hpp"
#include "kernels/activation/activation.cuh"
#include "kernels/common.cuh"
#include "kernels/gemm/grouped_gemm_sm90.hpp"
#include "kernels/gemm/prefill_epilogue.cuh"
#include "kernels/gemm/tma_tiles.cuh"

namespace moekit::kernels {

namespace {

using tma::Epilogue;
using tma::kBoxBytes;
using tma::kSwizzleAlign;
using tma::Scales;
using Barrier = cutlass::arch::ClusterTransactionBarrier;
namespace gmma = cute::SM90::GMMA;

using prefill::epilogue;
using prefill::ItemOut;
using prefill::kCopy;
using prefill::kStagePitch;
using prefill::kStageRows;
using prefill::kWarpgroup;
using prefill::with_kind;
constexpr int kConsumers = 2;                          // consumer warpgroups
constexpr int kThreads = kWarpgroup * (1 + kConsumers);  // + the producer warpgroup
constexpr int kTileRows = 64 * kConsumers;             // token rows of a tile
constexpr int kRowBoxBytes = kTileRows * kBoxBytes;    // 16 KB
constexpr int kProducerRegs = 40, kConsumerRegs = 232;  // 65536 registers over 384 threads

struct Fp8 {};

// The tile of each operand kind. cols: weight rows (output columns) of a
// tile; stage_k: k of one stage (one 128-byte box row); mma_k: k of one wgmma.
template <class Op>
struct Tile {  // bf16 / fp16
  static constexpr int kCols = 256, kStageK = 64, kMmaK = 16, kStages = 4;
  static constexpr bool kFp8 = false;
};
template <>
struct Tile<Fp8> {
  static constexpr int kCols = 128, kStageK = 128, kMmaK = 32, kStages = 6;
  static constexpr bool kFp8 = true;
};
template <class Op>
constexpr int kStageBytes = kRowBoxBytes + Tile<Op>::kCols * kBoxBytes;
template <class Op>
constexpr int kAcc = Tile<Op>::kCols / 2;  // accumulators a thread holds: 64 rows x kCols / 128
// Each consumer warpgroup's epilogue staging tile (prefill_epilogue.cuh).
constexpr size_t kStagingBytes = size_t{kConsumers} * kStageRows * kStagePitch * 2;

size_t smem_bytes_of(int stage_bytes, int stages, int num_experts) {
  return kSwizzleAlign + static_cast<size_t>(stages) * stage_bytes + 2 * stages * sizeof(uint64_t) +
         2 * (static_cast<size_t>(num_experts) + 1) * sizeof(int32_t) + 16 + kStagingBytes;  // 16: alignment
}

template <class Op>
size_t smem_bytes(int num_experts) {
  return smem_bytes_of(kStageBytes<Op>, Tile<Op>::kStages, num_experts);
}

// The wgmma of a stage's k step for 64 rows x kCols: T on 16-bit operands, e4m3 otherwise.
template <class T, class Op>
struct Mma {
  using type = std::conditional_t<std::is_same_v<T, __nv_bfloat16>,
                                  gmma::MMA_64x256x16_F32BF16BF16_SS<gmma::Major::K, gmma::Major::K>,
                                  gmma::MMA_64x256x16_F32F16F16_SS<gmma::Major::K, gmma::Major::K>>;
};
template <class T>
struct Mma<T, Fp8> {
  using type = gmma::MMA_64x128x32_F32E4M3E4M3_SS_TN<>;
};

template <class M, class Acc, size_t... I>
__device__ __forceinline__ void wgmma_call(uint64_t da, uint64_t db, Acc& d, gmma::ScaleOut s,
                                           std::index_sequence<I...>) {
  M::fma(da, db, d[I]..., s);
}

template <int N>
__device__ __forceinline__ void fence(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) cute::warpgroup_fence_operand(d[i]);
}

// Issues one stage's wgmmas (kStageK / kMmaK steps of +32 bytes of k: +2 in
// the descriptors' address field) into d, as one committed batch; the first
// step overwrites d when zero is set.
template <class T, class Op, int N>
__device__ __forceinline__ void issue_stage(float (&d)[N], uint32_t a_tile, uint32_t w_tile, bool zero) {
  const uint64_t da = tma::smem_descriptor(a_tile), dw = tma::smem_descriptor(w_tile);
  fence(d);
  cute::warpgroup_arrive();
#pragma unroll
  for (int kk = 0; kk < Tile<Op>::kStageK / Tile<Op>::kMmaK; ++kk)
    wgmma_call<typename Mma<T, Op>::type>(da + 2 * kk, dw + 2 * kk, d,
                                          zero && kk == 0 ? gmma::ScaleOut::Zero : gmma::ScaleOut::One,
                                          std::make_index_sequence<N>{});
  cute::warpgroup_commit_batch();
}

// 16 bytes from global to shared memory, asynchronously (cp.async, L2 only);
// src_bytes 0 writes zeros and reads nothing.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}

template <class T, class Op>
__global__ void __launch_bounds__(kThreads, 1) prefill_gemm_kernel(
    const __grid_constant__ CUtensorMap w_map,  // [E, N, K] weights, box (128 B of k, kCols rows, 1)
    const __grid_constant__ CUtensorMap a_map,  // [rows, K] expert-ordered rows, box (128 B of k, 128 rows)
    const int32_t* __restrict__ offsets,        // [E + 1]
    int num_experts,
    const T* __restrict__ bias,                 // [E, N] or null
    T* __restrict__ c,                          // [rows, N], or fused: [rows, inter]
    int n, int k, Epilogue ep, Scales sc,
    const unsigned char* __restrict__ gather_src,  // gathered rows: [in_rows, K] (a), the layer's input; else null
    const int32_t* __restrict__ gather_pairs,      // row -> (token, slot) pair (GroupedGemmParams)
    int top_k, int in_rows) {
  timeline::Scope timeline_scope(timeline::kGemmPrefill);  // MOEKIT_TIMELINE builds only
  using S = Tile<Op>;
  constexpr int kStages = S::kStages, kCols = S::kCols, kBytes = kStageBytes<Op>;
  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  unsigned char* base = smem_raw + ((kSwizzleAlign - raw % kSwizzleAlign) % kSwizzleAlign);
  const uint32_t stages = static_cast<uint32_t>(__cvta_generic_to_shared(base));  // kStages x kBytes
  auto* full = reinterpret_cast<uint64_t*>(base + kStages * kBytes);             // [kStages]
  uint64_t* empty = full + kStages;                                               // [kStages]
  auto* offs = reinterpret_cast<int32_t*>(empty + kStages);                       // [E + 1]
  int32_t* first_unit = offs + num_experts + 1;                                   // [E + 1]
  // [kConsumers][kStageRows][kStagePitch]: each consumer warpgroup's epilogue tile.
  T* staging = reinterpret_cast<T*>(
      (reinterpret_cast<uintptr_t>(first_unit + num_experts + 1) + 15) / 16 * 16);
  __shared__ typename cub::BlockScan<int, kThreads>::TempStorage scan_storage;

  const int wg = threadIdx.x / kWarpgroup, lane = threadIdx.x % 32;
  // Before pdl_wait(): the offsets and the weights only, as in the decode
  // kernel. Gathering its rows, the kernel runs right after the sort (16
  // bits) or the input's quantization (e4m3), the offsets' writer or the
  // kernel after it, so it reads them only after that wait.
  const bool gather = gather_pairs != nullptr;
  if (gather) pdl_wait();
  // full: the producer thread's arrival with the transaction bytes, and when
  // gathering, one more per producer thread once its row copies have landed.
  tma::start_block<kThreads>(full, empty, kStages, kConsumers * 4, &w_map, &a_map, offsets, DecodeRouting{}, offs,
                             first_unit, num_experts, kTileRows, scan_storage,
                             gather ? 1 + kWarpgroup : 1);  // empty: every consumer warp
  const bool gated = ep.fused && activation_is_gated(ep.act.kind);
  // Output columns an item writes, slices per unit, and a slice's first
  // weight coordinate (a row of w, or of each half with split_halves).
  const int item_cols = gated ? kCols / 2 : kCols;
  const int slices = ep.fused ? (ep.inter + item_cols - 1) / item_cols : (n + kCols - 1) / kCols;
  const int slice_step = ep.split_halves ? kCols / 2 : kCols;
  const int64_t items = static_cast<int64_t>(first_unit[num_experts]) * slices;
  const int k_stages = (k + S::kStageK - 1) / S::kStageK;
  const tma::Items it{first_unit, offs, num_experts, kTileRows, slices, slice_step, k_stages, items};

  if (wg == 0) {
    cutlass::arch::warpgroup_reg_dealloc<kProducerRegs>();
    constexpr uint64_t kHint = static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_NORMAL);
    auto load_weights = [&](int slot, const tma::Cursor& cur) {
      Barrier::arrive_and_expect_tx(&full[slot], gather ? kBytes - kRowBoxBytes : kBytes);
      tma::load_weight_box(&w_map, &full[slot], kHint, base + slot * kBytes + kRowBoxBytes, cur.kb * S::kStageK,
                           cur, ep.split_halves);
    };
    if (!gather) {
      if (threadIdx.x == 0)
        tma::produce(it, empty, kStages, load_weights, [&](int slot, const tma::Cursor& cur) {
          cute::SM90_TMA_LOAD_2D::copy(&a_map, &full[slot], kHint, base + slot * kBytes, cur.kb * S::kStageK,
                                       cur.u.begin + cur.u.row0);
        });
    } else {
      // Gathered rows, by every producer thread: thread t copies 16-byte
      // chunk t % 8 of tile rows t / 8 + 16 i (i < 8), so each copy
      // instruction of a warp reads four whole 128-byte row segments, and the
      // chunk's place in the 128-byte swizzle (chunk ^ row % 8, as TMA writes
      // it) is the same for all of the thread's rows. Rows past the expert's
      // and columns past K are zero-filled (never stored either way).
      const int t = static_cast<int>(threadIdx.x), chunk = t % 8, row_lo = t / 8;
      const uint32_t chunk_at = static_cast<uint32_t>(row_lo * kBoxBytes + (chunk ^ (row_lo % 8)) * 16);
      int64_t item_of_rows = -1;
      int32_t token[kTileRows / 16];  // the input row of each of the thread's tile rows, -1: none
      tma::produce(
          it, empty, kStages,
          [&](int slot, const tma::Cursor& cur) {
            if (t == 0) load_weights(slot, cur);
          },
          [&](int slot, const tma::Cursor& cur) {
            if (cur.item != item_of_rows) {
              item_of_rows = cur.item;
#pragma unroll
              for (int i = 0; i < kTileRows / 16; ++i) {
                const int r = cur.u.row0 + row_lo + 16 * i;
                token[i] = r < cur.u.rows ? gather_pairs[cur.u.begin + r] / top_k : -1;
              }
            }
            // Bytes: a stage is one 128-byte box column of every row (64
            // 16-bit values or 128 e4m3 ones); row_bytes is a multiple of 16.
            const int row_bytes = k * (S::kFp8 ? 1 : 2), col = cur.kb * kBoxBytes + chunk * 16;
            const uint32_t dst = stages + slot * kBytes + chunk_at;
#pragma unroll
            for (int i = 0; i < kTileRows / 16; ++i) {
              const bool ok = token[i] >= 0 && col < row_bytes;
              cp_async_16(dst + i * 16 * kBoxBytes,
                          ok ? gather_src + static_cast<int64_t>(token[i]) * row_bytes + col : gather_src, ok ? 16 : 0);
            }
            // The stage's barrier completes once these copies have landed;
            // wgmma then reads them with no proxy fence, as CUTLASS's sm90
            // cp.async + GMMA mainloop does.
            cutlass::arch::cpasync_barrier_arrive_noinc(&full[slot]);
          });
      asm volatile("cp.async.wait_all;" ::: "memory");  // no copy outlives its thread
    }
  } else {
    cutlass::arch::warpgroup_reg_alloc<kConsumerRegs>();
    const int cw = wg - 1, warp = (threadIdx.x / 32) % 4, g = lane / 4, q = lane % 4;
    const uint32_t a_offset = static_cast<uint32_t>(cw * 64 * kBoxBytes);  // this warpgroup's 64 rows
    pdl_wait();  // before the first store
    int slot = 0;
    uint32_t phase = 0;
    auto release = [&](int s) {
      __syncwarp();
      if (lane == 0) Barrier::arrive(&empty[s]);
    };
    for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
      const tma::Cursor cur = tma::cursor_at(it, item);  // the item as the producer loads it
      const tma::Unit& u = cur.u;
      const int slice = static_cast<int>(item % slices), w_row0 = cur.w_row0;
      // This thread's rows (within the expert): r_lo and r_lo + 8.
      const int r_lo = u.row0 + cw * 64 + warp * 16 + g;
      if (u.row0 + cw * 64 >= u.rows) {
        // Every row of this warpgroup's half of the tile is past the expert's
        // rows (a last unit of at most 64 rows): it passes its stages on
        // unread, so the other warpgroup's wgmmas have the tensor cores to
        // themselves, and stores nothing.
        for (int kb = 0; kb < k_stages; ++kb) {
          Barrier::wait(&full[slot], phase);
          release(slot);
          if (++slot == kStages) { slot = 0; phase ^= 1; }
        }
        if constexpr (MOEKIT_TIMELINE) {
          timeline::mark(timeline::kGemmPrefill, timeline::kItemMath);
          timeline::mark(timeline::kGemmPrefill, timeline::kItemStored);
        }
        continue;
      }
      float acc[kAcc<Op>];
      if constexpr (!S::kFp8) {
        int prev = 0;
        for (int kb = 0; kb < k_stages; ++kb) {
          Barrier::wait(&full[slot], phase);
          if constexpr (MOEKIT_TIMELINE)  // when the warp's first stage arrived
            if (item == blockIdx.x && kb == 0) timeline::mark(timeline::kGemmPrefill, timeline::kFirstStage);
          const uint32_t tile = stages + slot * kBytes;
          issue_stage<T, Op>(acc, tile + a_offset, tile + kRowBoxBytes, kb == 0);
          if (kb > 0) {
            cute::warpgroup_wait<1>();  // the previous stage's wgmmas are done with its slot
            release(prev);
          }
          prev = slot;
          if (++slot == kStages) { slot = 0; phase ^= 1; }
        }
        cute::warpgroup_wait<0>();
        fence(acc);
        release(prev);
      } else {
        // Scales of block kb for rows r_lo, r_lo + 8 (0 past the expert's
        // rows): the expert's column-major [k_stages, rows] block, or when
        // gathering, the input's [k_stages, in_rows] at the row's token.
        const float* sa_e = sc.a + (gather ? 0 : static_cast<int64_t>(u.begin) * k_stages);
        const int a_rows = gather ? in_rows : u.rows;
        int a_col[2];  // the scale column of rows r_lo, r_lo + 8; -1: none
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int r = r_lo + 8 * h;
          a_col[h] = r >= u.rows ? -1 : gather ? gather_pairs[u.begin + r] / top_k : r;
        }
        // Weight scales: the tile's columns lie in one 128-row block (rows
        // w_row0..), or with split halves (fused GEMM 1) in one per half:
        // rows w_row0.. of the gate half and inter + w_row0.. of the up half
        // (the launcher declines an I that would put a half in two blocks).
        const float* sw_e = sc.w != nullptr ? sc.w + u.expert * sc.w_stride : nullptr;
        const int64_t sw_half0 = static_cast<int64_t>(w_row0 / 128) * k_stages;
        const int64_t sw_half1 = ep.split_halves ? static_cast<int64_t>((ep.inter + w_row0) / 128) * k_stages
                                                 : sw_half0;
        auto block_scales = [&](int kb, float (&s)[2][2]) {  // [half of the tile's columns][row r_lo, r_lo + 8]
          const float sw0 = sw_e != nullptr ? __ldg(sw_e + sw_half0 + kb) : 1.0f;
          const float sw1 = sw_e != nullptr && ep.split_halves ? __ldg(sw_e + sw_half1 + kb) : sw0;
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const float a = a_col[h] >= 0 ? __ldg(sa_e + static_cast<int64_t>(kb) * a_rows + a_col[h]) : 0.0f;
            s[0][h] = a * sw0;
            s[1][h] = a * sw1;
          }
        };
        float part[kAcc<Op>];
#pragma unroll
        for (int i = 0; i < kAcc<Op>; ++i) acc[i] = 0.0f;
        // Each block's wgmmas sum into part; once they are done the slot is
        // released and part promoted: acc = fma(part, a_scale * w_scale, acc).
        // While one warpgroup promotes, the other's wgmmas keep the tensor
        // cores busy. (Promoting block b while block b + 1's wgmmas run on a
        // second partial would overlap it within a warpgroup too, but ptxas
        // then serializes every wgmma: it does not let a register of one
        // accumulator be read while a later batch is pending.)
        for (int kb = 0; kb < k_stages; ++kb) {
          float s[2][2];
          block_scales(kb, s);
          Barrier::wait(&full[slot], phase);
          if constexpr (MOEKIT_TIMELINE)  // when the warp's first stage arrived
            if (item == blockIdx.x && kb == 0) timeline::mark(timeline::kGemmPrefill, timeline::kFirstStage);
          const uint32_t tile = stages + slot * kBytes;
          issue_stage<T, Op>(part, tile + a_offset, tile + kRowBoxBytes, true);
          cute::warpgroup_wait<0>();
          fence(part);
          release(slot);
          if (++slot == kStages) { slot = 0; phase ^= 1; }
#pragma unroll
          for (int i = 0; i < kAcc<Op>; ++i)  // part[i]: tile column 8 (i / 4) + ..., row r_lo + 8 ((i / 2) % 2)
            acc[i] = fmaf(part[i], s[i / 4 >= kAcc<Op> / 8][(i / 2) % 2], acc[i]);
        }
      }

      if constexpr (MOEKIT_TIMELINE) timeline::mark(timeline::kGemmPrefill, timeline::kItemMath);
      const T* bias_e = bias ? bias + static_cast<int64_t>(u.expert) * n : nullptr;
      const ItemOut<T> out{staging + cw * kStageRows * kStagePitch, bias_e, c, n, ep.fused ? ep.inter : n,
                           u.begin, u.row0 + cw * 64, u.rows, gated ? slice * item_cols : w_row0, w_row0,
                           ep.inter, warp, g, q};
      if (!ep.fused) {
        epilogue<kCopy, false, kCols>(acc, out, ep, cw);
      } else {
        with_kind(ep.act.kind, [&](auto kind_tag) {
          constexpr int kKind = decltype(kind_tag)::value;
          if constexpr (activation_is_gated(static_cast<moekit_activation_t>(kKind)))
            if (ep.split_halves) return epilogue<kKind, true, kCols>(acc, out, ep, cw);
          epilogue<kKind, false, kCols>(acc, out, ep, cw);
        });
      }
      if constexpr (MOEKIT_TIMELINE) timeline::mark(timeline::kGemmPrefill, timeline::kItemStored);
    }
  }
  // Every thread triggers only after its own wait (the layer's rule,
  // common.cuh). The producer warpgroup's other threads get here without
  // having waited; a trigger from them could start the next kernel before
  // the kernel before this one has finished, and the decode GEMM reads
  // expert_offsets early on the strength of that rule.
  pdl_wait();
  pdl_launch_dependents();
}

}  // namespace

cudaError_t prefill_grouped_gemm(const GroupedGemmParams& p, int64_t rows_capacity, cudaStream_t stream,
                                 const FusedActivation* fuse) {
  const bool fp8 = p.a_scale != nullptr;
  if (!tma::operands_fit(p, rows_capacity, kPrefillMaxExperts)) return cudaErrorNotSupported;
  // Gathering: rows copied 16 bytes at a time from a 16-byte aligned input
  // of rows_capacity / top_k rows; e4m3 with block scales only (per-tensor
  // scaling folds each expert's weight scale into its rows' scales).
  const bool gather = p.gather_pairs != nullptr;
  if (gather && (p.gather_top_k < 1 || p.gather_top_k > rows_capacity || p.w_scale_ones != nullptr ||
                 reinterpret_cast<uintptr_t>(p.a) % 16 != 0))
    return cudaErrorNotSupported;
  Epilogue ep{};
  if (!tma::make_epilogue(fuse, p.n, &ep)) return cudaErrorNotSupported;
  // e4m3 with split halves: each half of a tile (64 weight rows) must lie in
  // one 128-row scale block, which the up half does only if I % 64 == 0.
  if (fp8 && ep.split_halves && ep.inter % (Tile<Fp8>::kCols / 2) != 0) return cudaErrorNotSupported;
  const int elem_bytes = fp8 ? 1 : 2;
  const int cols = fp8 ? Tile<Fp8>::kCols : Tile<__nv_bfloat16>::kCols;
  CUtensorMap w_map{}, a_map{};
  if (!tma::encode_weights(&w_map, tma::map_type(p), p.w, p.num_experts, p.n, p.k, elem_bytes, cols,
                           ep.split_halves) ||
      !tma::encode_rows(&a_map, tma::map_type(p), p.a, gather ? rows_capacity / p.gather_top_k : rows_capacity,
                        p.k, elem_bytes, kTileRows))  // gathering: the input's rows (the map is not read)
    return cudaErrorNotSupported;
  const Scales sc = tma::scales_of(p);

  // Items: at most min(E, rows) experts with rows, rows / 128 more units, times the slices.
  const int64_t slices = (p.n + cols - 1) / cols;
  const int64_t units = std::min<int64_t>(p.num_experts, rows_capacity) + rows_capacity / kTileRows;
  const int64_t grid = std::max<int64_t>(1, std::min<int64_t>(p.sm_count, units * slices));

  return tma::for_types<Fp8>(p, [&](auto out_tag, auto op_tag) {
    using T = decltype(out_tag);
    using Op = decltype(op_tag);
    return tma::launch<T, prefill_gemm_kernel<T, Op>>(
        smem_bytes<Op>(kPrefillMaxExperts), dim3(static_cast<unsigned>(grid)), dim3(kThreads),
        smem_bytes<Op>(p.num_experts), stream, p, w_map, a_map, ep, sc,
        gather ? static_cast<const unsigned char*>(p.a) : nullptr, p.gather_pairs, static_cast<int>(p.gather_top_k),
        static_cast<int>(gather ? rows_capacity / p.gather_top_k : 0));
  });
}

}  // namespace moekit::kernels
