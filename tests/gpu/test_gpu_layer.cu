#include <gtest/gtest.h>

#include "moekit/moekit.hpp"

TEST(GpuLayer, Placeholder) {
  if (!moekit::cuda_available()) GTEST_SKIP() << "no CUDA GPU of compute capability 9.0 here";
}
