// Shared device helpers: dtype traits, 16-byte vectors of 8 elements, launch
// checks and grid sizing. Included by the kernel files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/timeline.cuh"
#include "moekit/moekit.h"

namespace moekit::kernels {

template <class T> struct DtypeOf;
template <> struct DtypeOf<__nv_bfloat16> { static constexpr moekit_dtype_t value = MOEKIT_DTYPE_BF16; };
template <> struct DtypeOf<__half> { static constexpr moekit_dtype_t value = MOEKIT_DTYPE_FP16; };
template <> struct DtypeOf<float> { static constexpr moekit_dtype_t value = MOEKIT_DTYPE_FP32; };

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

template <class T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }

// Eight consecutive elements: one 16-byte access for 16-bit types, two for fp32.
// Callers guarantee 16-byte alignment (rows are multiples of 8 elements and the
// API checks base pointers).
template <class T>
struct alignas(16) Vec8 {
  T v[8];
};

template <class T>
__device__ __forceinline__ void load8(const T* p, float (&out)[8]) {
  if constexpr (sizeof(T) == 2) {
    Vec8<T> x = *reinterpret_cast<const Vec8<T>*>(p);
#pragma unroll
    for (int i = 0; i < 8; ++i) out[i] = to_float(x.v[i]);
  } else {
    float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
    out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w;
    out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
  }
}

template <class T>
__device__ __forceinline__ void store8(T* p, const float (&in)[8]) {
  if constexpr (sizeof(T) == 2) {
    Vec8<T> x;
#pragma unroll
    for (int i = 0; i < 8; ++i) x.v[i] = from_float<T>(in[i]);
    *reinterpret_cast<Vec8<T>*>(p) = x;
  } else {
    reinterpret_cast<float4*>(p)[0] = make_float4(in[0], in[1], in[2], in[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(in[4], in[5], in[6], in[7]);
  }
}

// dst[0, hidden_size) = src[0, hidden_size) (times w when scaled), converted
// to TOut: 16-byte accesses by the block's kThreads threads, each with kUnroll
// loads in flight before its stores. hidden_size is a multiple of 8. The
// gathers' row copy (permute.cu, sort_gather_tiny.cu).
template <int kThreads, int kUnroll, class TIn, class TOut>
__device__ __forceinline__ void copy_row(const TIn* __restrict__ src, TOut* __restrict__ dst, int64_t hidden_size,
                                         bool scaled, float w) {
  const int64_t vecs = hidden_size / 8;
  for (int64_t v0 = threadIdx.x; v0 < vecs; v0 += kThreads * kUnroll) {
    float x[kUnroll][8];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (v0 + u * kThreads < vecs) load8(src + (v0 + u * kThreads) * 8, x[u]);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (v0 + u * kThreads >= vecs) continue;
      if (scaled)
#pragma unroll
        for (int i = 0; i < 8; ++i) x[u][i] *= w;
      store8(dst + (v0 + u * kThreads) * 8, x[u]);
    }
  }
}

// Calls f(T{}) with T the storage type of d.
template <class F>
void dispatch_dtype(moekit_dtype_t d, F&& f) {
  switch (d) {
    case MOEKIT_DTYPE_BF16: f(__nv_bfloat16{}); break;
    case MOEKIT_DTYPE_FP16: f(__half{}); break;
    default: f(float{}); break;
  }
}

// The last e in [0, n) with at(e) <= value, for a nondecreasing at (0 if
// none): at(e) reads the e-th entry wherever the table lives.
template <class At>
__device__ __forceinline__ int last_at_most(At at, int n, int64_t value) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (at(mid) <= value) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// The local expert of an expert-ordered row: the last e with offsets[e] <= row
// (empty experts are skipped). offsets [E + 1] on the device.
__device__ __forceinline__ int expert_of_row(const int32_t* offsets, int num_experts, int64_t row) {
  return last_at_most([offsets](int e) { return __ldg(offsets + e); }, num_experts, row);
}

// Programmatic dependent launch (PDL). A kernel launched with launch_pdl may
// start while the kernel before it on the stream is still running, so it
// calls pdl_wait() before its first global memory access (read or write):
// that returns once the previous kernel has finished and its writes are
// visible, and, since that kernel waited in turn, so are all earlier ones.
// pdl_launch_dependents() lets the next kernel be scheduled early (its
// pre-wait prologue then overlaps this kernel); it changes no result.
// Both are no-ops for kernels launched the ordinary way.
// Rule every kernel of the layer keeps: pdl_launch_dependents() only after
// pdl_wait() (or in a kernel launched the ordinary way). Then, when a kernel
// starts, every kernel two or more back on the stream has finished, which
// the decode GEMM uses to read the sort's expert_offsets before its wait.
__device__ __forceinline__ void pdl_wait() {
  asm volatile("griddepcontrol.wait;" ::: "memory");
  timeline::mark(timeline::kUnknown, timeline::kWait);  // MOEKIT_TIMELINE builds only
}
__device__ __forceinline__ void pdl_launch_dependents() {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

template <class... Params, class... Args>
cudaError_t launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                       cudaStream_t stream, Args... args) {
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...);
}

// Grid for grid-stride loops: enough blocks to fill the GPU, no more than the work.
inline unsigned grid_for(int64_t work_blocks, int sm_count, int blocks_per_sm = 8) {
  int64_t cap = static_cast<int64_t>(sm_count) * blocks_per_sm;
  int64_t g = work_blocks < cap ? work_blocks : cap;
  return static_cast<unsigned>(g < 1 ? 1 : g);
}

}  // namespace moekit::kernels
