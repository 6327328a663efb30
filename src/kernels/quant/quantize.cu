// fp8 activation quantization (moekit.h, moekit_quant_t), fused into the two
// stages that produce a GEMM's input rows: the gather (GEMM 1) and the
// activation (GEMM 2). One block per row, each warp one 128-column group at a
// time, four columns per lane: the group's amax is a warp reduction, and the
// lane writes its four e4m3 bytes in one 32-bit store. Dynamic per-tensor
// scaling needs the whole row's amax first: one block reduction, then the
// values are produced again (they are cheap) and quantized.
//
// Scales are written where the CUTLASS blockwise GEMM reads them: for each
// expert's rows [o_e, o_e + m_e) a column-major [ceil(K/128), m_e] block at
// scales + o_e * ceil(K/128). Per-tensor scaling folds the expert's weight
// scale into every entry (the GEMM then multiplies by 1), so both schemes run
// the same GEMM arithmetic.
#include "common/fp8_math.hpp"
#include "kernels/common.cuh"
#include "kernels/kernels.hpp"

namespace moekit::kernels {

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

template <class T>
__device__ __forceinline__ void load4(const T* p, float (&v)[4]) {
  static_assert(sizeof(T) == 2, "fp8 layers compute in bf16 or fp16");
  struct alignas(8) Pack { T x[4]; };
  const Pack q = *reinterpret_cast<const Pack*>(p);
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = to_float(q.x[i]);
}

// The last expert whose first row is <= row.
__device__ __forceinline__ int expert_of_row(const int32_t* offsets, int num_experts, int64_t row) {
  int lo = 0, hi = num_experts - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (offsets[mid] <= row) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// Row values of GEMM 1's input: the token's hidden row (already the compute dtype).
template <class T>
struct GatherSource {
  const T* hidden;             // [T, H]
  const int32_t* sorted_pairs; // row -> pair
  int64_t top_k;
  __device__ const T* row_ptr(int64_t row, int64_t k) const {
    return hidden + static_cast<int64_t>(sorted_pairs[row] / top_k) * k;
  }
  __device__ void values(const T* src, int64_t col, float (&v)[4]) const { load4(src + col, v); }
};

// Row values of GEMM 2's input: the activation of GEMM 1's row, rounded to
// the compute dtype as in the unquantized layer.
template <class T>
struct ActivationSource {
  const T* gemm1;  // [rows, N1]
  int64_t inter;
  ActivationParams act;
  moekit_gate_up_order_t order;
  __device__ const T* row_ptr(int64_t row, int64_t) const {
    return gemm1 + row * (activation_is_gated(act.kind) ? 2 * inter : inter);
  }
  __device__ void values(const T* g, int64_t col, float (&v)[4]) const {
    if (!activation_is_gated(act.kind)) {
      load4(g + col, v);
#pragma unroll
      for (int i = 0; i < 4; ++i) v[i] = to_float(from_float<T>(apply_activation(act.kind, v[i])));
      return;
    }
    float gate[4], up[4];
    if (order == MOEKIT_INTERLEAVED) {
      float lo[4], hi[4];
      load4(g + 2 * col, lo);
      load4(g + 2 * col + 4, hi);
      gate[0] = lo[0]; up[0] = lo[1]; gate[1] = lo[2]; up[1] = lo[3];
      gate[2] = hi[0]; up[2] = hi[1]; gate[3] = hi[2]; up[3] = hi[3];
    } else {
      load4(g + gate_column(order, col, inter), gate);
      load4(g + up_column(order, col, inter), up);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = to_float(from_float<T>(apply_gated_activation(act, gate[i], up[i])));
  }
};

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ uint32_t quantize4(const float (&v)[4], float s) {
  uint32_t packed = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) packed |= static_cast<uint32_t>(fp8_quantize(v[i], s)) << (8 * i);
  return packed;
}

template <class T, class Source>
__global__ void __launch_bounds__(kThreads) quantize_rows_kernel(
    Source src, const int32_t* __restrict__ offsets, int num_experts, int64_t k,
    moekit_quant_t kind, const float* __restrict__ static_scale,  // or null: dynamic
    const float* __restrict__ w_scale,                            // [E] per tensor, else unused
    uint8_t* __restrict__ out,                                    // [rows, K] e4m3
    float* __restrict__ scales) {
  __shared__ float warp_amax[kWarps];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t valid = offsets[num_experts];
  const int64_t groups = fp8_blocks(k);
  for (int64_t row = blockIdx.x; row < valid; row += gridDim.x) {
    const int e = expert_of_row(offsets, num_experts, row);
    const int64_t first = offsets[e], rows_e = offsets[e + 1] - first;
    float* sc = scales + first * groups + (row - first);  // column-major [groups, rows_e]
    const T* in = src.row_ptr(row, k);
    uint8_t* dst = out + row * k;
    float row_scale = 0.0f;  // per tensor: the row's (or the static) scale times w_scale[e]
    if (kind == MOEKIT_QUANT_FP8_TENSOR) {
      float s;
      if (static_scale != nullptr) {
        s = *static_scale;
      } else {
        float amax = 0.0f;
        for (int64_t col = (static_cast<int64_t>(warp) * 32 + lane) * 4; col < k; col += kThreads * 4) {
          float v[4];
          src.values(in, col, v);
#pragma unroll
          for (int i = 0; i < 4; ++i) amax = fmaxf(amax, fp8_magnitude(v[i]));
        }
        amax = warp_max(amax);
        if (lane == 0) warp_amax[warp] = amax;
        __syncthreads();
        amax = warp_amax[0];
#pragma unroll
        for (int w = 1; w < kWarps; ++w) amax = fmaxf(amax, warp_amax[w]);
        __syncthreads();  // warp_amax is reused by the next row
        s = fp8_scale_of(amax);
      }
      for (int64_t col = (static_cast<int64_t>(warp) * 32 + lane) * 4; col < k; col += kThreads * 4) {
        float v[4];
        src.values(in, col, v);
        *reinterpret_cast<uint32_t*>(dst + col) = quantize4(v, s);
      }
      row_scale = s * w_scale[e];
      for (int64_t g = threadIdx.x; g < groups; g += kThreads) sc[g * rows_e] = row_scale;
      continue;
    }
    for (int64_t g = warp; g < groups; g += kWarps) {  // FP8_BLOCK: one scale per 128 columns
      const int64_t col = g * kFp8Block + lane * 4;
      float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      const bool in_row = col < k;  // k is a multiple of 16, so a lane's 4 columns are all in or out
      if (in_row) src.values(in, col, v);
      float amax = 0.0f;
#pragma unroll
      for (int i = 0; i < 4; ++i) amax = fmaxf(amax, fp8_magnitude(v[i]));
      const float s = fp8_scale_of(warp_max(amax));
      if (in_row) *reinterpret_cast<uint32_t*>(dst + col) = quantize4(v, s);
      if (lane == 0) sc[g * rows_e] = s;
    }
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
  const unsigned grid = grid_for(max_rows, dev.sm_count, 16);
  quantize_rows_kernel<T, Source><<<grid, kThreads, 0, stream>>>(
      src, q.expert_offsets, q.num_experts, k, q.kind, q.static_scale, q.w_scale, q.out, q.scales);
  return cudaGetLastError();
}

}  // namespace

cudaError_t fill_ones(float* out, int64_t count, cudaStream_t stream) {
  const int64_t blocks = (count + 255) / 256;
  fill_ones_kernel<<<static_cast<unsigned>(blocks < 1024 ? (blocks < 1 ? 1 : blocks) : 1024), 256, 0,
                     stream>>>(out, count);
  return cudaGetLastError();
}

cudaError_t launch_permute_quant(const void* hidden, moekit_dtype_t dtype,
                                 const int32_t* sorted_pairs, int64_t top_k, int64_t hidden_size,
                                 const QuantRows& q, int64_t max_rows, const DeviceInfo& dev,
                                 cudaStream_t stream) {
  cudaError_t e = cudaErrorNotSupported;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (sizeof(T) == 2) {
      const GatherSource<T> src{static_cast<const T*>(hidden), sorted_pairs, top_k};
      e = launch<GatherSource<T>, T>(src, q, max_rows, hidden_size, dev, stream);
    }
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
