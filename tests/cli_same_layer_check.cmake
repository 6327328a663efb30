# `moekit bench` makes one layer for its largest T and runs the smaller ones
# on its first tokens; a point must see the layer `moekit run` makes for its
# own T. Runs bench over BENCH_TOKENS and run at RUN_TOKENS (a member of the
# sweep, at position ROW) with the same COMMON options and compares the
# oracle's errors, which depend on every weight and input value, exactly.
# TAG names its files, so tests of different options can run at once (ctest -j).
#   cmake -DCLI=... -DDIR=... -DTAG=bf16 -DCOMMON="--model;...;--device;cpu" -DBENCH_TOKENS=300,8
#         -DRUN_TOKENS=8 -DROW=1 -P cli_same_layer_check.cmake
set(bench_json "${DIR}/cli_same_layer_bench_${TAG}.json")
set(run_json "${DIR}/cli_same_layer_run_${TAG}.json")
file(REMOVE "${bench_json}" "${run_json}")
execute_process(COMMAND "${CLI}" bench ${COMMON} --tokens ${BENCH_TOKENS} --json "${bench_json}"
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "moekit bench exited with ${rc}")
endif()
execute_process(COMMAND "${CLI}" run ${COMMON} --tokens ${RUN_TOKENS} --json "${run_json}"
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "moekit run exited with ${rc}")
endif()
file(READ "${bench_json}" bench)
file(READ "${run_json}" run)
string(JSON bench_t GET "${bench}" rows ${ROW} T)
if(NOT bench_t EQUAL RUN_TOKENS)
  message(FATAL_ERROR "bench row ${ROW} is T = ${bench_t}, expected ${RUN_TOKENS}")
endif()
foreach(field rel_error max_abs_error)
  string(JSON b GET "${bench}" rows ${ROW} check ${field})
  string(JSON r GET "${run}" check ${field})
  if(NOT b STREQUAL r)
    message(FATAL_ERROR "T = ${RUN_TOKENS}: ${field} ${b} in the sweep, ${r} alone: a different layer")
  endif()
  message(STATUS "T = ${RUN_TOKENS}: ${field} ${b} in the sweep and alone")
endforeach()
string(JSON b GET "${bench}" rows ${ROW} touched_experts)
string(JSON r GET "${run}" touched_experts)
if(NOT b EQUAL r)
  message(FATAL_ERROR "T = ${RUN_TOKENS}: ${b} touched experts in the sweep, ${r} alone")
endif()
