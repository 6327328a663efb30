// Placeholder CUDA backend: reports the device, runs nothing yet.
#include <cuda_runtime.h>

#include "api/backend.hpp"
#include "api/validate.hpp"

namespace moekit::detail {

bool cuda_backend_available() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    return false;
  }
  return true;
}

Status cuda_workspace_size(const Problem&, size_t* bytes) {
  *bytes = 0;
  if (!cuda_backend_available())
    return error(MOEKIT_ERROR_NO_DEVICE, "device: expected a CUDA GPU, found none; use device = cpu");
  return error(MOEKIT_ERROR_NOT_SUPPORTED, "device: the CUDA backend is not built yet");
}

Status cuda_check_arguments(const Arguments&, const void*) {
  return error(MOEKIT_ERROR_NOT_SUPPORTED, "device: the CUDA backend is not built yet");
}

Status cuda_run(const Arguments&, void*, CUstream_st*) {
  return error(MOEKIT_ERROR_NOT_SUPPORTED, "device: the CUDA backend is not built yet");
}

}  // namespace moekit::detail
