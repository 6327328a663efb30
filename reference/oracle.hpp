// An independent fp64 oracle of the whole layer, one token at a time: loop over
// the token's k slots, run that expert's FFN in double, add weight * output.
// It shares nothing with reference.cpp but the dtype conversions, so a mistake
// in the staged reference (sort, maps, activation) shows up against it.
#pragma once

#include <cstdint>
#include <vector>

#include "moekit/moekit.h"

namespace moekit::ref {

// out [H] = the exact (unrounded) layer output of token t.
void oracle_token(const moekit_arguments_t& a, int64_t t, double* out);

// Errors of got [n_tokens, H] (output_dtype) against the oracle on `tokens`.
struct OracleCheck {
  double rel_frobenius;   // ||got - ref|| / ||ref||  (0 if both are 0)
  double max_abs_error;
  int64_t first_bad;      // first element (flat index over the tokens) that is NaN where the oracle is finite, or -1
  int64_t nonfinite_mismatch;  // elements whose finiteness differs from the oracle
};
OracleCheck check_against_oracle(const moekit_arguments_t& a, const void* got,
                                 const std::vector<int64_t>& tokens);

// Relative Frobenius error a correct implementation stays under, per weight dtype.
double oracle_tolerance(moekit_dtype_t weight_dtype, moekit_dtype_t input_dtype,
                        moekit_dtype_t output_dtype);

}  // namespace moekit::ref
