// The two backends behind MoeLayer. Arguments reaching them are validated.
#pragma once

#include <cstddef>
#include <string>

#include "moekit/moekit.hpp"

namespace moekit::detail {

// CUDA backend (src/api/cuda_backend.cu).
bool cuda_backend_available();
Status cuda_workspace_size(const Problem& p, size_t* bytes);
// Checks what only the CUDA runtime can tell: a usable device, and that every
// pointer is device-accessible memory.
Status cuda_check_arguments(const Arguments& a, const void* workspace);
// Validates the workspace and the pointers, then launches; a = validated arguments.
Status cuda_run(const Arguments& a, void* workspace, size_t workspace_bytes, CUstream_st* stream);
// The kernels a run of p would use and why (validated p).
std::string cuda_describe_plan(const Problem& p);

Status cuda_check_router_arguments(const RouterArguments& a);
Status cuda_router_run(const RouterArguments& a, CUstream_st* stream);

}  // namespace moekit::detail
