// moekit C++ API: the same operator as moekit.h, CUTLASS style
// (can_implement / workspace_size / run). The plain structs of moekit.h are the
// contract; this header adds a Status that carries its message. No CUDA headers.
#ifndef MOEKIT_MOEKIT_HPP_
#define MOEKIT_MOEKIT_HPP_

#include <cstddef>
#include <string>
#include <utility>

#include "moekit/moekit.h"

struct CUstream_st;  // cudaStream_t without the CUDA headers

namespace moekit {

using Problem = moekit_problem_t;
using Arguments = moekit_arguments_t;
using Diagnostics = moekit_diagnostics_t;

class Status {
 public:
  Status() = default;
  Status(moekit_status_t code, std::string message)
      : code_(code), message_(std::move(message)) {}
  static Status ok_status() { return Status(); }

  bool ok() const { return code_ == MOEKIT_SUCCESS; }
  explicit operator bool() const { return ok(); }
  moekit_status_t code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  moekit_status_t code_ = MOEKIT_SUCCESS;
  std::string message_;
};

// A problem with the defaults of moekit_problem_init.
MOEKIT_API Problem default_problem();

class MOEKIT_API MoeLayer {
 public:
  // Whether run(args, ...) would accept these arguments (workspace aside).
  static Status can_implement(const Arguments& args);

  // Bytes of workspace run needs for this problem (depends on num_tokens).
  static Status workspace_size(const Problem& problem, size_t* bytes);

  // Never allocates, never synchronizes; stream is ignored on the CPU.
  static Status run(const Arguments& args, void* workspace, size_t workspace_bytes,
                    CUstream_st* stream = nullptr);

  // One line naming the kernels run would choose for this problem and why
  // (also printed to stderr by every run while MOEKIT_PRINT_CONFIG is set).
  static Status describe_plan(const Problem& problem, std::string* plan);
};

using RouterProblem = moekit_router_problem_t;
using RouterArguments = moekit_router_arguments_t;

// A router problem with the defaults of moekit_router_problem_init.
MOEKIT_API RouterProblem default_router_problem();

class MOEKIT_API Router {
 public:
  static Status can_implement(const RouterArguments& args);
  // Never allocates or synchronizes; stream is ignored on the CPU.
  static Status run(const RouterArguments& args, CUstream_st* stream = nullptr);
};

// Whether the CUDA backend can run on this machine.
MOEKIT_API bool cuda_available();

}  // namespace moekit

#endif  // MOEKIT_MOEKIT_HPP_
