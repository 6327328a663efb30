// The C API: plain wrappers over moekit::MoeLayer that keep each thread's last
// error message for moekit_last_error_message().
#include <exception>
#include <string>

#include "api/validate.hpp"
#include "moekit/moekit.h"
#include "moekit/moekit.hpp"

namespace {

thread_local std::string g_last_error;

moekit_status_t record(const moekit::Status& s) {
  g_last_error = s.ok() ? std::string() : s.message();
  return s.code();
}

template <class F>
moekit_status_t guarded(F&& f) {
  try {
    return record(f());
  } catch (const std::exception& e) {  // e.g. std::bad_alloc from a message
    return record(moekit::Status(MOEKIT_ERROR_INTERNAL, std::string("internal error: ") + e.what()));
  }
}

moekit::Status null_argument(const char* name) {
  return moekit::Status(MOEKIT_ERROR_INVALID_ARGUMENT,
                        std::string(name) + ": expected a pointer, got NULL");
}

}  // namespace

extern "C" {

void moekit_problem_init(moekit_problem_t* p) {
  if (p != nullptr) *p = moekit::default_problem();
}

moekit_status_t moekit_can_implement(const moekit_arguments_t* args) {
  return guarded([&] {
    return args ? moekit::MoeLayer::can_implement(*args) : null_argument("args");
  });
}

moekit_status_t moekit_workspace_size(const moekit_problem_t* p, size_t* bytes) {
  return guarded([&] {
    return p ? moekit::MoeLayer::workspace_size(*p, bytes) : null_argument("problem");
  });
}

moekit_status_t moekit_run(const moekit_arguments_t* args, void* workspace,
                           size_t workspace_bytes, void* stream) {
  return guarded([&] {
    return args ? moekit::MoeLayer::run(*args, workspace, workspace_bytes,
                                        static_cast<CUstream_st*>(stream))
                : null_argument("args");
  });
}

void moekit_router_problem_init(moekit_router_problem_t* p) {
  if (p != nullptr) *p = moekit::default_router_problem();
}

moekit_status_t moekit_router_can_implement(const moekit_router_arguments_t* args) {
  return guarded([&] {
    return args ? moekit::Router::can_implement(*args) : null_argument("args");
  });
}

moekit_status_t moekit_router_run(const moekit_router_arguments_t* args, void* stream) {
  return guarded([&] {
    return args ? moekit::Router::run(*args, static_cast<CUstream_st*>(stream))
                : null_argument("args");
  });
}

const char* moekit_last_error_message(void) { return g_last_error.c_str(); }

const char* moekit_status_string(moekit_status_t status) {
  switch (status) {
    case MOEKIT_SUCCESS: return "success";
    case MOEKIT_ERROR_INVALID_ARGUMENT: return "invalid argument";
    case MOEKIT_ERROR_NOT_SUPPORTED: return "not supported";
    case MOEKIT_ERROR_WORKSPACE: return "bad workspace";
    case MOEKIT_ERROR_CUDA: return "CUDA error";
    case MOEKIT_ERROR_NO_DEVICE: return "no usable CUDA device";
    case MOEKIT_ERROR_INTERNAL: return "internal error";
  }
  return "unknown status";
}

const char* moekit_dtype_name(moekit_dtype_t dtype) { return moekit::detail::dtype_name(dtype); }

const char* moekit_activation_name(moekit_activation_t a) {
  static const char* const kNames[] = {"swiglu", "geglu_erf", "geglu_tanh", "silu", "gelu_erf",
                                       "gelu_tanh", "relu", "relu2", "identity"};
  return (a >= MOEKIT_ACT_SWIGLU && a <= MOEKIT_ACT_IDENTITY) ? kNames[a] : "unknown";
}

int moekit_cuda_available(void) { return moekit::cuda_available() ? 1 : 0; }

}  // extern "C"
