// MoeLayer: validate once, then hand the call to the CPU reference or the CUDA
// backend. The C API (src/capi) wraps exactly these functions.
#include <limits>

#include "api/backend.hpp"
#include "api/validate.hpp"
#include "reference/reference.hpp"
#include "reference/router.hpp"

namespace moekit {

Problem default_problem() {
  Problem p{};
  p.ep_size = 1;
  p.input_dtype = p.weight_dtype = p.output_dtype = MOEKIT_DTYPE_BF16;
  p.activation = MOEKIT_ACT_SWIGLU;
  p.swiglu_alpha = 1.0f;
  p.swiglu_beta = 0.0f;
  p.swiglu_limit = std::numeric_limits<float>::infinity();
  p.gate_up_order = MOEKIT_GATE_UP;
  p.device = MOEKIT_DEVICE_CUDA;
  p.router = {MOEKIT_ROUTER_NONE, MOEKIT_DTYPE_FP32, 1, 1, 1, 1.0f};
  return p;
}

RouterProblem default_router_problem() {
  RouterProblem p{};
  p.config = {MOEKIT_ROUTER_SOFTMAX_TOPK, MOEKIT_DTYPE_FP32, 1, 1, 1, 1.0f};
  p.device = MOEKIT_DEVICE_CUDA;
  return p;
}

Status Router::can_implement(const RouterArguments& args) {
  if (Status s = detail::validate_router_arguments(args); !s) return s;
  if (args.problem.device == MOEKIT_DEVICE_CUDA && args.problem.num_tokens > 0)
    return detail::cuda_check_router_arguments(args);
  return Status();
}

Status Router::run(const RouterArguments& args, CUstream_st* stream) {
  if (Status s = can_implement(args); !s) return s;
  if (args.problem.num_tokens == 0) return Status();
  if (args.problem.device == MOEKIT_DEVICE_CPU) {
    ref::route(args.problem, args.logits, args.correction_bias, args.topk_ids, args.topk_weights);
    return Status();
  }
  return detail::cuda_router_run(args, stream);
}

bool cuda_available() { return detail::cuda_backend_available(); }

Status MoeLayer::can_implement(const Arguments& args) {
  if (Status s = detail::validate_arguments(args); !s) return s;
  if (args.problem.device == MOEKIT_DEVICE_CUDA && args.problem.num_tokens > 0)
    return detail::cuda_check_arguments(args, nullptr);
  if (args.problem.device == MOEKIT_DEVICE_CPU) return detail::validate_host_scales(args);
  return Status();
}

Status MoeLayer::workspace_size(const Problem& problem, size_t* bytes) {
  if (bytes == nullptr)
    return Status(MOEKIT_ERROR_INVALID_ARGUMENT, "bytes: expected a pointer, got NULL");
  if (Status s = detail::validate_problem(problem); !s) return s;
  if (problem.device == MOEKIT_DEVICE_CUDA) return detail::cuda_workspace_size(problem, bytes);
  *bytes = problem.num_tokens == 0 ? 0 : ref::layer_workspace_bytes(problem);
  return Status();
}

Status MoeLayer::describe_plan(const Problem& problem, std::string* plan) {
  if (plan == nullptr)
    return Status(MOEKIT_ERROR_INVALID_ARGUMENT, "plan: expected a pointer, got NULL");
  if (Status s = detail::validate_problem(problem); !s) return s;
  *plan = problem.device == MOEKIT_DEVICE_CPU ? "cpu reference (every stage on the host)"
                                              : detail::cuda_describe_plan(problem);
  return Status();
}

Status MoeLayer::run(const Arguments& args, void* workspace, size_t workspace_bytes,
                     CUstream_st* stream) {
  if (Status s = detail::validate_arguments(args); !s) return s;
  if (args.problem.device == MOEKIT_DEVICE_CUDA)  // device checks, layout and launches
    return detail::cuda_run(args, workspace, workspace_bytes, stream);
  if (Status s = detail::validate_host_scales(args); !s) return s;
  const size_t required = args.problem.num_tokens == 0 ? 0 : ref::layer_workspace_bytes(args.problem);
  if (Status s = detail::validate_workspace(args, workspace, workspace_bytes, required); !s)
    return s;
  if (args.problem.num_tokens > 0) ref::moe_layer(args, workspace);
  return Status();
}

}  // namespace moekit
