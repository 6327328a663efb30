// CUTLASS 4.x sm90 grouped GEMM for the MoE layer, as one template that each
// sm90_grouped_gemm_<family>.cu instantiates for bf16 and fp16. Only those
// files include this header (and CUTLASS).
//
// One MoE GEMM is E groups: group e is expert e's rows [offsets[e], offsets[e+1])
// of the expert-ordered activations times its weight matrix. A one-thread-per-
// group kernel turns expert_offsets into CUTLASS's per-group shapes, pointers
// and strides on the device, then the ptr-array TMA warp-specialized kernel
// runs them all in one persistent launch (groups with no rows have no tiles).
//
// Normal kernels:  D[rows, N]  = A[rows, K] . W[N, K]^T            (M = rows)
// Swap kernels:    D^T[N, rows] = W[N, K] . A[rows, K]^T            (M = N)
// The swap form writes the same row-major D (as a column-major D^T), so the
// caller cannot tell them apart; it puts the weight rows on wgmma's 64-row M
// side when an expert has only a few token rows.
//
// The epilogue is acc + bias[e] (per output column), rounded once to the
// element type: the same rounding points as the CPU reference.
//
// Block-scaled families (kBlockScaled: e4m3 operands, CUTLASS's FP8Blockwise
// mainloop) multiply each 128-deep block's partial sum by the product of its
// activation scale (one per row and block) and weight scale (one per 128x128
// block) before accumulating; gemm_params.hpp lays the scales out.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/detail/blockwise_scale_layout.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/group_array_problem_shape.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/util/packed_stride.hpp"

#include "kernels/gemm/gemm_params.hpp"

namespace moekit::kernels::sm90 {

using namespace cute;

// Element: bias and D (and A, B unless ElementAB says otherwise).
template <class Element_, class TileShape_, class ClusterShape_, class KernelSchedule_,
          class EpilogueSchedule_, bool kSwap_, class ElementAB_ = Element_,
          bool kBlockScaled_ = false>
struct GroupedGemm {
  using Element = Element_;
  using ElementAB = ElementAB_;
  using TileShape = TileShape_;        // (BLK_M, BLK_N, BLK_K)
  using ClusterShape = ClusterShape_;
  static constexpr bool kSwap = kSwap_;
  static constexpr bool kBlockScaled = kBlockScaled_;

  using ProblemShape = cutlass::gemm::GroupProblemShape<Shape<int, int, int>>;  // (M, N, K) per group
  using LayoutA = cutlass::layout::RowMajor;     // normal: activations; swap: weights
  using LayoutB = cutlass::layout::ColumnMajor;  // K-major (K, N): weights / activations
  using LayoutD = std::conditional_t<kSwap, cutlass::layout::ColumnMajor, cutlass::layout::RowMajor>;
  static constexpr int kAlign = 128 / cutlass::sizeof_bits<Element>::value;     // 16 bytes
  static constexpr int kAlignAB = 128 / cutlass::sizeof_bits<ElementAB>::value;

  // Scale layouts: activations one scale per row and 128 columns, M- (or N-)
  // major per group, as QuantRows writes them; weights one per 128x128 block,
  // K-major, as checkpoints store them ([N/128, K/128] per expert).
  using ScaleConfig = std::conditional_t<
      kSwap,
      cutlass::detail::Sm90BlockwiseScaleConfig<128, 1, 128, cute::GMMA::Major::K, cute::GMMA::Major::MN>,
      cutlass::detail::Sm90BlockwiseScaleConfig<1, 128, 128, cute::GMMA::Major::MN, cute::GMMA::Major::K>>;
  using LayoutSFA = decltype(ScaleConfig::deduce_layoutSFA());
  using LayoutSFB = decltype(ScaleConfig::deduce_layoutSFB());
  using OperandA = std::conditional_t<kBlockScaled, cute::tuple<LayoutA*, LayoutSFA*>, LayoutA*>;
  using OperandB = std::conditional_t<kBlockScaled, cute::tuple<LayoutB*, LayoutSFB*>, LayoutB*>;

  // Bias varies along the output columns of D: along N normally, along M when swapped.
  using Bias = std::conditional_t<
      kSwap,
      cutlass::epilogue::fusion::Sm90ColBroadcast<0, TileShape, Element, float, Stride<_1, _0, int64_t>>,
      cutlass::epilogue::fusion::Sm90RowBroadcast<0, TileShape, Element, float, Stride<_0, _1, int64_t>>>;
  using Epilogue = cutlass::epilogue::fusion::Sm90EVT<
      cutlass::epilogue::fusion::Sm90Compute<cutlass::plus, Element, float,
                                             cutlass::FloatRoundStyle::round_to_nearest>,
      cutlass::epilogue::fusion::Sm90AccFetch, Bias>;

  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float,
      void, LayoutD*, kAlign,  // no source C
      Element, LayoutD*, kAlign, EpilogueSchedule_, Epilogue>::CollectiveOp;

  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, ElementAB, OperandA, kAlignAB, ElementAB,
      OperandB, kAlignAB, float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      KernelSchedule_>::CollectiveOp;

  using Kernel = cutlass::gemm::kernel::GemmUniversal<ProblemShape, CollectiveMainloop,
                                                      CollectiveEpilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  using StrideA = typename Gemm::GemmKernel::InternalStrideA;
  using StrideB = typename Gemm::GemmKernel::InternalStrideB;
  using StrideD = typename Gemm::GemmKernel::InternalStrideD;
  using Shape3 = typename ProblemShape::UnderlyingProblemShape;
  static_assert(sizeof(Shape3) <= kGroupEntryBytes && sizeof(StrideA) <= kGroupEntryBytes &&
                sizeof(StrideB) <= kGroupEntryBytes && sizeof(StrideD) <= kGroupEntryBytes &&
                sizeof(void*) <= kGroupEntryBytes, "a per-group entry outgrew its scratch slot");

  // Per-group arrays inside the caller's scratch.
  struct Groups {
    Shape3* shapes;
    const ElementAB** ptr_a;
    const ElementAB** ptr_b;
    Element** ptr_d;
    StrideA* stride_a;
    StrideB* stride_b;
    StrideD* stride_d;
    const float** ptr_sfa;  // block-scaled families only
    const float** ptr_sfb;
  };
  static Groups carve(void* scratch, int64_t num_experts) {
    char* at = static_cast<char*>(scratch);
    const size_t s = group_array_bytes(num_experts);
    return Groups{reinterpret_cast<Shape3*>(at), reinterpret_cast<const ElementAB**>(at + s),
                  reinterpret_cast<const ElementAB**>(at + 2 * s), reinterpret_cast<Element**>(at + 3 * s),
                  reinterpret_cast<StrideA*>(at + 4 * s), reinterpret_cast<StrideB*>(at + 5 * s),
                  reinterpret_cast<StrideD*>(at + 6 * s), reinterpret_cast<const float**>(at + 7 * s),
                  reinterpret_cast<const float**>(at + 8 * s)};
  }
  static_assert(kGroupArrays == 9, "carve() lays out every per-group array");

  static auto mainloop_arguments(const Groups& g) {
    using Mainloop = typename Gemm::GemmKernel::CollectiveMainloop::Arguments;
    // CUTLASS's grouped blockwise mainloop derives each group's scale layout
    // from its problem shape, so no per-group layouts are passed.
    if constexpr (kBlockScaled)
      return Mainloop{g.ptr_a, g.stride_a, g.ptr_b, g.stride_b, g.ptr_sfa, nullptr, g.ptr_sfb, nullptr};
    else
      return Mainloop{g.ptr_a, g.stride_a, g.ptr_b, g.stride_b};
  }

  static typename Gemm::Arguments arguments(const GroupedGemmParams& p, const Groups& g) {
    cutlass::KernelHardwareInfo hw;
    hw.device_id = 0;  // unused when sm_count is given
    hw.sm_count = p.sm_count;
    typename Gemm::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGrouped,
        {p.num_experts, g.shapes, nullptr},  // shapes live on the device only
        mainloop_arguments(g),
        {{}, nullptr, g.stride_d, g.ptr_d, g.stride_d},
        hw};
    // Tree arguments: op_0 = acc, op_1 = bias, op_2 = plus. The bias is an
    // [E, N] matrix, so the group index (L) strides by N; null reads as 0.
    auto& bias = args.epilogue.thread.op_1;
    bias.null_default = Element(0);
    if constexpr (kSwap) {
      bias.ptr_col = static_cast<const Element*>(p.bias);
      bias.dCol = {_1{}, _0{}, p.n};
    } else {
      bias.ptr_row = static_cast<const Element*>(p.bias);
      bias.dRow = {_0{}, _1{}, p.n};
    }
    return args;
  }
};

// Builds group e's shape, operand (and scale) pointers and strides from
// expert_offsets, fills the per-tensor block of ones, and zeroes CUTLASS's
// workspace (16 bytes a thread). The GEMM writes its per-SM TMA descriptors
// there through the tensormap proxy, which compute-sanitizer's initcheck does
// not count as a write; after these plain stores every byte the GEMM reads
// was written. It costs no extra launch.
template <class G>
__global__ void build_groups_kernel(typename G::Groups g, const int32_t* __restrict__ offsets,
                                    int num_experts, const typename G::ElementAB* a,
                                    const typename G::ElementAB* w, typename G::Element* c, int n,
                                    int k, GroupedGemmParams p, uint4* cutlass_ws,
                                    int64_t cutlass_ws_vecs) {
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (tid < cutlass_ws_vecs) cutlass_ws[tid] = make_uint4(0, 0, 0, 0);
  if (tid < p.w_scale_ones_count) p.w_scale_ones[tid] = 1.0f;
  const int e = static_cast<int>(tid);
  if (tid >= num_experts) return;
  const int begin = offsets[e];
  const int rows = offsets[e + 1] - begin;
  const typename G::ElementAB* a_e = a + static_cast<int64_t>(begin) * k;  // [rows, K]
  const typename G::ElementAB* w_e = w + static_cast<int64_t>(e) * n * k;  // [N, K]
  typename G::Element* c_e = c + static_cast<int64_t>(begin) * n;          // [rows, N]
  if constexpr (G::kBlockScaled) {
    const float* sa = p.a_scale + static_cast<int64_t>(begin) * ((k + 127) / 128);
    const float* sw = p.w_scale + e * p.w_scale_stride;
    g.ptr_sfa[e] = G::kSwap ? sw : sa;
    g.ptr_sfb[e] = G::kSwap ? sa : sw;
  }
  if constexpr (G::kSwap) {
    g.shapes[e] = {n, rows, k};
    g.ptr_a[e] = w_e;
    g.ptr_b[e] = a_e;
    g.stride_a[e] = cutlass::make_cute_packed_stride(typename G::StrideA{}, {n, k, 1});
    g.stride_b[e] = cutlass::make_cute_packed_stride(typename G::StrideB{}, {rows, k, 1});
    g.stride_d[e] = cutlass::make_cute_packed_stride(typename G::StrideD{}, {n, rows, 1});
  } else {
    g.shapes[e] = {rows, n, k};
    g.ptr_a[e] = a_e;
    g.ptr_b[e] = w_e;
    g.stride_a[e] = cutlass::make_cute_packed_stride(typename G::StrideA{}, {rows, k, 1});
    g.stride_b[e] = cutlass::make_cute_packed_stride(typename G::StrideB{}, {n, k, 1});
    g.stride_d[e] = cutlass::make_cute_packed_stride(typename G::StrideD{}, {rows, n, 1});
  }
  g.ptr_d[e] = c_e;
}

template <class G>
size_t workspace_bytes(int64_t num_experts, int sm_count) {
  GroupedGemmParams p{};
  p.num_experts = static_cast<int>(num_experts);
  p.sm_count = sm_count;
  typename G::Groups g{};
  return G::Gemm::get_workspace_size(G::arguments(p, g));
}

template <class G>
cudaError_t run(const GroupedGemmParams& p, cudaStream_t stream) {
  using E = typename G::Element;
  using EAB = typename G::ElementAB;
  if (G::kBlockScaled != (p.a_scale != nullptr)) return cudaErrorNotSupported;
  const typename G::Groups g = G::carve(p.scratch, p.num_experts);
  void* cutlass_ws =
      static_cast<char*>(p.scratch) + kGroupArrays * group_array_bytes(p.num_experts);
  typename G::Gemm::Arguments args = G::arguments(p, g);
  typename G::Gemm gemm;
  // Declined before anything is launched, so the caller's fallback starts clean.
  if (gemm.can_implement(args) != cutlass::Status::kSuccess) return cudaErrorNotSupported;
  const int64_t ws_vecs = static_cast<int64_t>((G::Gemm::get_workspace_size(args) + 15) / 16);
  constexpr int kThreads = 128;
  const int64_t threads = std::max<int64_t>({p.num_experts, ws_vecs, p.w_scale_ones_count});
  build_groups_kernel<G><<<static_cast<unsigned>((threads + kThreads - 1) / kThreads), kThreads, 0,
                           stream>>>(
      g, p.expert_offsets, p.num_experts, static_cast<const EAB*>(p.a), static_cast<const EAB*>(p.w),
      static_cast<E*>(p.c), static_cast<int>(p.n), static_cast<int>(p.k), p,
      static_cast<uint4*>(cutlass_ws), ws_vecs);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;

  if (gemm.initialize(args, cutlass_ws, stream) != cutlass::Status::kSuccess)
    return cudaErrorNotSupported;
  if (gemm.run(stream) != cutlass::Status::kSuccess) {
    cudaError_t e = cudaGetLastError();
    return e != cudaSuccess ? e : cudaErrorLaunchFailure;
  }
  return cudaGetLastError();
}

// The launcher and workspace size of one family for every output element
// type it is compiled for; each sm90_grouped_gemm_<family>.cu forwards to these.
template <template <class> class Family>
cudaError_t run_any_dtype(const GroupedGemmParams& p, cudaStream_t stream) {
  switch (p.dtype) {
    case MOEKIT_DTYPE_BF16: return run<Family<cutlass::bfloat16_t>>(p, stream);
    case MOEKIT_DTYPE_FP16: return run<Family<cutlass::half_t>>(p, stream);
    default: return cudaErrorNotSupported;
  }
}

template <template <class> class Family>
size_t workspace_any_dtype(int64_t num_experts, int sm_count) {
  return std::max(workspace_bytes<Family<cutlass::bfloat16_t>>(num_experts, sm_count),
                  workspace_bytes<Family<cutlass::half_t>>(num_experts, sm_count));
}

}  // namespace moekit::kernels::sm90
