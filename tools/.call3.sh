#!/usr/bin/env bash
export PATH=$PATH:/usr/local/cuda/bin
B=.devbin
timeout 200 $B/tests/gpu/moekit_gpu_tests > $OUT/tests.log 2>&1; echo "tests rc=$?"; grep -E "^\[  (PASSED|FAILED) " $OUT/tests.log
ROUNDS=2 BUILD=$B timeout 150 tools/bench-env "mixtral-8x7b:4096 deepseek-v3:4096 qwen3-30b-a3b:4096 mixtral-8x7b:16384" "" "MOEKIT_GEMM2=tile128x256" > $OUT/ab.md 2>&1; cat $OUT/ab.md
mkdir -p /tmp/sw; timeout 230 $B/moekit_layer_bench /tmp/sw/rows.jsonl qwen3-30b-a3b mixtral-8x7b deepseek-v3 qwen3-30b-a3b:1:fp16 qwen3-30b-a3b:4096:fp16 qwen3-30b-a3b::fp8_block mixtral-8x7b::fp8_block deepseek-v3::fp8_block qwen3-30b-a3b:1:fp8_tensor qwen3-30b-a3b:64:fp8_tensor qwen3-30b-a3b:4096:fp8_tensor mixtral-8x7b:1:fp8_tensor mixtral-8x7b:8:fp8_tensor mixtral-8x7b:4096:fp8_tensor > $OUT/sweep.log 2>&1; echo "sweep rc=$?"
python3 bench/layer_report.py /tmp/sw/rows.jsonl $OUT/results > $OUT/report.log 2>&1; echo "report rc=$?"; tail -5 $OUT/report.log; ls $OUT/results
