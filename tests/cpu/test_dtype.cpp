// Conversions are the ground every float comparison stands on: check them
// exhaustively where the domain allows.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "reference/dtype.hpp"

using namespace moekit::ref;

TEST(Dtype, Fp16RoundTripsEveryBitPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = fp16_to_float(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(fp16_to_float(float_to_fp16(f)))) << h;
      continue;
    }
    ASSERT_EQ(float_to_fp16(f), h) << "bits " << h << " value " << f;
  }
}

TEST(Dtype, Bf16RoundTripsEveryBitPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = bf16_to_float(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(f)))) << h;
      continue;
    }
    ASSERT_EQ(float_to_bf16(f), h) << "bits " << h;
  }
}

TEST(Dtype, Fp16RoundsToNearestEvenBetweenNeighbours) {
  // Midpoints between consecutive halves round to the even one; just above or
  // below them round to the nearer one. Covers normals and subnormals.
  for (uint32_t h = 0; h < 0x7bff; ++h) {
    double lo = fp16_to_float(static_cast<uint16_t>(h));
    double hi = fp16_to_float(static_cast<uint16_t>(h + 1));
    float mid = static_cast<float>((lo + hi) / 2);
    ASSERT_EQ(float_to_fp16(mid), (h % 2 == 0) ? h : h + 1) << h;
    float above = std::nextafter(mid, INFINITY), below = std::nextafter(mid, -INFINITY);
    ASSERT_EQ(float_to_fp16(above), h + 1) << h;
    ASSERT_EQ(float_to_fp16(below), h) << h;
  }
}

TEST(Dtype, Fp16OverflowAndSpecials) {
  EXPECT_EQ(float_to_fp16(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_fp16(65519.0f), 0x7bff);
  EXPECT_EQ(float_to_fp16(65520.0f), 0x7c00);
  EXPECT_EQ(float_to_fp16(-1e9f), 0xfc00);
  EXPECT_EQ(float_to_fp16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(float_to_fp16(1e-30f), 0x0000);
  EXPECT_EQ(float_to_fp16(-0.0f), 0x8000);
}

TEST(Dtype, Bf16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(bits_float(0x3f808000u)), 0x3f80);  // tie, even below
  EXPECT_EQ(float_to_bf16(bits_float(0x3f818000u)), 0x3f82);  // tie, even above
  EXPECT_EQ(float_to_bf16(bits_float(0x3f808001u)), 0x3f81);
  EXPECT_EQ(float_to_bf16(bits_float(0x7f7fffffu)), 0x7f80);  // max float rounds to inf
}
