// The hand-written prefill kernel's epilogue (prefill_gemm.cu): one item's
// accumulators, per consumer warpgroup, through a shared staging tile to
// 16-byte row stores, with GEMM 1's activation where it is fused. Included by
// prefill_gemm.cu only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>
#include <utility>

#include "common/activation_math.hpp"
#include "kernels/activation/activation.cuh"
#include "kernels/common.cuh"
#include "kernels/gemm/tma_tiles.cuh"

namespace moekit::kernels::prefill {

using tma::Epilogue;

constexpr int kWarpgroup = 128;

// The epilogue's staging tile per consumer warpgroup: 64 rows of a 64-column
// chunk, rows padded by 16 bytes (conflict-free 4-byte writes, 16-byte reads).
constexpr int kChunk = 64, kStageRows = 64, kStagePitch = kChunk + 8;

// Named barrier of consumer warpgroup cw (ids 1 and 2; 0 is __syncthreads).
__device__ __forceinline__ void wg_barrier(int cw) {
  if (cw == 0)
    asm volatile("bar.sync 1, %0;" ::"n"(kWarpgroup) : "memory");
  else
    asm volatile("bar.sync 2, %0;" ::"n"(kWarpgroup) : "memory");
}

// f(std::integral_constant<int, I>{}) for I = 0 .. N-1: indices that stay
// compile-time constants (accumulator registers cannot be indexed at run time).
template <class F, int... I>
__device__ __forceinline__ void static_for_impl(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, class F>
__device__ __forceinline__ void static_for(F&& f) {
  static_for_impl(f, std::make_integer_sequence<int, N>{});
}

template <class T>
using T2 = std::conditional_t<std::is_same_v<T, __nv_bfloat16>, __nv_bfloat162, __half2>;
template <class T>
__device__ __forceinline__ void load_pair(const T* p, float& a, float& b) {
  const T2<T> v = *reinterpret_cast<const T2<T>*>(p);
  a = to_float(v.x);
  b = to_float(v.y);
}

// The epilogue of an item, per consumer warpgroup. acc[4i + 2h + e] holds
// row r_lo + 8h, tile column 8i + 2q + e. It runs in chunks of kChunk tile
// columns through the warpgroup's staging tile: first the values GEMM 1 would
// store (bias added, rounded to T), [64 rows][kChunk columns], and with split
// halves 32 columns of each half, laid out like a GEMM 1 row of an
// intermediate size of 32 (half 0, then half 1), so that the activation
// stage's own activation8 reads them back; then 16-byte reads, the activation
// and 16-byte stores of the expert's rows.
//
// The chunk loop is rolled, so the read-back and the activation exist once
// per (kind, layout): each pass stages the chunk at the front of acc, whose
// registers it names by constants, and moves the other chunks down by one.
// Registers cannot be indexed at run time: picking a chunk's registers by a
// run-time branch instead (2026-12-02) let the compiler index acc[] and put
// it in local memory, a 520-byte stack frame, and that build ran 15-30%
// slower; the whole loop unrolled per chunk (the form before this one) made
// the epilogue half of the kernel's executed instructions (one 2-byte shared
// load and one run-time activation switch per value).

constexpr int kCopy = -1;  // the epilogue "kind" that stores D as staged

// f(integral_constant<int, kind>) for the activation kind given at run time.
template <class F>
__device__ __forceinline__ void with_kind(moekit_activation_t kind, F&& f) {
  switch (kind) {
    case MOEKIT_ACT_SWIGLU: return f(std::integral_constant<int, MOEKIT_ACT_SWIGLU>{});
    case MOEKIT_ACT_GEGLU_ERF: return f(std::integral_constant<int, MOEKIT_ACT_GEGLU_ERF>{});
    case MOEKIT_ACT_GEGLU_TANH: return f(std::integral_constant<int, MOEKIT_ACT_GEGLU_TANH>{});
    case MOEKIT_ACT_SILU: return f(std::integral_constant<int, MOEKIT_ACT_SILU>{});
    case MOEKIT_ACT_GELU_ERF: return f(std::integral_constant<int, MOEKIT_ACT_GELU_ERF>{});
    case MOEKIT_ACT_GELU_TANH: return f(std::integral_constant<int, MOEKIT_ACT_GELU_TANH>{});
    case MOEKIT_ACT_RELU: return f(std::integral_constant<int, MOEKIT_ACT_RELU>{});
    case MOEKIT_ACT_RELU2: return f(std::integral_constant<int, MOEKIT_ACT_RELU2>{});
    default: return f(std::integral_constant<int, MOEKIT_ACT_IDENTITY>{});  // apply_activation's default
  }
}

// Where an item's outputs go, for one consumer warpgroup and thread.
template <class T>
struct ItemOut {
  T* tile;          // the warpgroup's staging tile, [kStageRows][kStagePitch]
  const T* bias;    // the expert's bias row [N], or null
  T* c;             // the output, rows of out_n
  int n, out_n;     // GEMM N (weight rows); output row length (N, or I when fused)
  int begin, row0;  // the expert's first row of c; the warpgroup's first row within the expert
  int rows;         // the expert's rows
  int col0;         // output column of the item's first output
  int w_row0;       // weight row of tile column 0 (without split halves)
  int inter;        // I: with split halves, half 1's weight rows start at inter
  int warp, g, q;   // the thread's warp in the warpgroup, lane / 4, lane % 4
};

template <int Kind, bool kSplit, int kCols, class T, int N>
__device__ __forceinline__ void epilogue(float (&acc)[N], const ItemOut<T>& o, const Epilogue& ep, int cw) {
  constexpr bool kGated = Kind != kCopy && activation_is_gated(static_cast<moekit_activation_t>(Kind));
  constexpr int kBlocks = kCols / 8;              // 8-column blocks of the tile: N / 4
  constexpr int kHalf = kCols / 16;               // blocks of one half (split halves)
  constexpr int kPerChunk = kChunk / 8;           // blocks a chunk stages
  constexpr int kOuts = kGated ? kChunk / 2 : kChunk;  // outputs of a staged row
  static_assert(N == 4 * kBlocks && kCols % kChunk == 0, "acc holds 4 values per 8-column block");
  ActivationParams act = ep.act;
  if constexpr (Kind != kCopy) act.kind = static_cast<moekit_activation_t>(Kind);

  // Block i of acc into the tile at column local; w_col: its weight row.
  auto put = [&](auto i_tag, int local, int w_col, bool valid) {
    constexpr int i = decltype(i_tag)::value;
    float b0 = 0.0f, b1 = 0.0f;
    if (o.bias && valid) load_pair(o.bias + w_col, b0, b1);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      T2<T> v;
      v.x = from_float<T>(valid ? acc[4 * i + 2 * h] + b0 : 0.0f);
      v.y = from_float<T>(valid ? acc[4 * i + 2 * h + 1] + b1 : 0.0f);
      *reinterpret_cast<T2<T>*>(o.tile + (o.warp * 16 + o.g + 8 * h) * kStagePitch + local) = v;
    }
  };
  // acc's block `to` takes block `from` (ascending `to`, so a block is read before it is overwritten).
  auto move = [&](int to, int from) {
#pragma unroll
    for (int r = 0; r < 4; ++r) acc[4 * to + r] = acc[4 * from + r];
  };

#pragma unroll 1
  for (int ch = 0; ch < kCols / kChunk; ++ch) {
    wg_barrier(cw);  // the previous chunk's readers are done with the tile
    if constexpr (kSplit) {
      constexpr int kPerHalf = kPerChunk / 2;  // blocks of each half a chunk takes
      static_for<kPerChunk>([&](auto hb_tag) {
        constexpr int half = decltype(hb_tag)::value / kPerHalf, b = decltype(hb_tag)::value % kPerHalf;
        const int j = o.col0 + ch * (kChunk / 2) + b * 8 + 2 * o.q;
        put(std::integral_constant<int, half * kHalf + b>{}, half * (kChunk / 2) + b * 8 + 2 * o.q,
            half * o.inter + j, j < o.inter);
      });
      static_for<kHalf - kPerHalf>([&](auto i_tag) {
        constexpr int i = decltype(i_tag)::value;
        move(i, i + kPerHalf);
        move(kHalf + i, kHalf + i + kPerHalf);
      });
    } else {
      static_for<kPerChunk>([&](auto b_tag) {
        constexpr int b = decltype(b_tag)::value;
        const int w_col = o.w_row0 + ch * kChunk + 8 * b + 2 * o.q;
        put(b_tag, 8 * b + 2 * o.q, w_col, w_col < o.n);
      });
      static_for<kBlocks - kPerChunk>([&](auto i_tag) {
        constexpr int i = decltype(i_tag)::value;
        move(i, i + kPerChunk);
      });
    }
    wg_barrier(cw);
    // Groups of 8 outputs of one row: one or two 16-byte shared loads and one 16-byte store.
    const int col = o.col0 + ch * kOuts;
    constexpr int kGroups = kStageRows * kOuts / 8;
    for (int gi = threadIdx.x % kWarpgroup; gi < kGroups; gi += kWarpgroup) {
      const int lr = gi / (kOuts / 8), j0 = (gi % (kOuts / 8)) * 8;
      const int r = o.row0 + lr;
      if (r >= o.rows) continue;
      const T* src = o.tile + lr * kStagePitch;
      T* dst = o.c + static_cast<int64_t>(o.begin + r) * o.out_n + col + j0;
      const bool whole = col + j0 + 8 <= o.out_n && o.out_n % 8 == 0;
      if constexpr (Kind == kCopy) {
        if (whole) {
          *reinterpret_cast<Vec8<T>*>(dst) = *reinterpret_cast<const Vec8<T>*>(src + j0);
        } else {
          for (int jj = 0; jj < 8 && col + j0 + jj < o.out_n; ++jj) dst[jj] = src[j0 + jj];
        }
      } else {
        float v[8];
        activation8(src, j0, kChunk / 2, act, ep.order, v);
        if (whole) {
          store8(dst, v);
        } else {
          for (int jj = 0; jj < 8 && col + j0 + jj < o.out_n; ++jj) dst[jj] = from_float<T>(v[jj]);
        }
      }
    }
  }
}

}  // namespace moekit::kernels::prefill
