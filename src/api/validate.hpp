// Argument validation at the API boundary. Every rejection names the argument,
// what was expected and what was given; nothing here touches device memory.
#pragma once

#include <cstddef>
#include <sstream>
#include <string>

#include "moekit/moekit.hpp"

namespace moekit::detail {

// Builds "arg: expected ..., got ..." messages with ostream formatting.
template <class... Parts>
Status error(moekit_status_t code, const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return Status(code, os.str());
}

const char* dtype_name(moekit_dtype_t d);
int64_t gemm1_columns(const Problem& p);  // N1 = 2I (gated) or I

Status validate_router_config(const moekit_router_config_t& c, int64_t num_experts,
                              int64_t top_k, const char* prefix);
Status validate_router_arguments(const RouterArguments& a);
Status validate_problem(const Problem& p);
Status validate_arguments(const Arguments& a);  // includes validate_problem
// fp8 scales are finite and > 0 (host memory only: the CPU backend).
Status validate_host_scales(const Arguments& a);
Status validate_workspace(const Arguments& a, const void* workspace, size_t workspace_bytes,
                          size_t required);

}  // namespace moekit::detail
