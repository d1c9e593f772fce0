# tests/gpu/moe_session_lib.sh: what the one-call MoE GPU sessions (moegemm.sh, moeroute.sh) share (sourced
# after session_lib.sh, with root, budget, out and B set): the build and moe_gpu_test, scripts/bench-moe.sh
# on the Qwen3-30B-A3B (4 layers) and Mixtral-8x7B (2 layers) shapes, the models' paths, and the summary.
models=${MODELS:-/tmp/models}

# moe_build_and_test BUILD_MARGIN_S TEST_TIMEOUT_S GREP: strata and moe_gpu_test built with BUILD_MARGIN_S of
# the budget left for what follows, the test run, and its lines matching GREP shown.
moe_build_and_test() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/logs/gpu.txt"
  cmake -S "$root" -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    >"$out/logs/configure.log" 2>&1
  timeout $(( $(left) - $1 )) cmake --build "$B" -j "$(nproc)" --target strata moe_gpu_test >"$out/logs/build.log" 2>&1
  note "build" "rc=$? at $(elapsed) s"
  grep -E "error|FAILED" "$out/logs/build.log" | head -20
  (cd "$B/tests" && STRATA_SOURCE_DIR=$root timeout "$2" ./moe_gpu_test --gtest_brief=1) >"$out/logs/moe_gpu_test.log" 2>&1
  note "moe_gpu_test" "rc=$? $(grep -E '^\[  (PASSED|FAILED) ' "$out/logs/moe_gpu_test.log" | tr '\n' ' ')"
  grep -E "$3" "$out/logs/moe_gpu_test.log" | head -40
}

# moe_bench_shapes MARGIN_S QWEN3_SHARE BATCHES BASELINE_OPTIONS: bench-moe.sh per shape, Qwen3 first with
# QWEN3_SHARE ("num/den") of the time left less MARGIN_S, the models kept for the runs after.
moe_bench_shapes() {
  local t
  for shape in qwen3 mixtral; do
    t=$(( $(left) - $1 ))
    [ "$shape" = qwen3 ] && t=$(( t * ${2%/*} / ${2#*/} ))  # leave the Mixtral shape its share
    if [ "$t" -lt 40 ]; then note "bench $shape" "skipped (budget)"; continue; fi
    STRATA_GPU_BUILD=$B MODELS=$models MIXTRAL_LAYERS=2 QWEN3_LAYERS=4 SKIP_PEER=1 SKIP_OFFLOAD=1 KEEP_MODELS=1 \
      BATCHES="$3" BASELINE_OPTIONS=$4 RESULTS="$out/bench" SHAPES=$shape \
      timeout "$t" bash scripts/bench-moe.sh >"$out/logs/bench-$shape.log" 2>&1
    note "bench $shape" "rc=$? at $(elapsed) s"
  done
}

# The model bench-moe.sh made for a shape.
moe_model_of() { case $1 in qwen3) echo "$models/qwen3-30b-a3b-shape-L4" ;; *) echo "$models/mixtral-8x7b-shape-L2" ;; esac; }

# The summary: the table, the last bench's table (it lists every shape finished in $out/bench), else whatever
# runs finished.
moe_summary_head() {
  echo
  echo "== summary ($(elapsed) s; logs and JSON in $out)"
  for line in "${summary[@]}"; do echo "$line"; done
  local last
  last=$(ls -t "$out"/logs/bench-*.log 2>/dev/null | head -1)
  [ -n "$last" ] && grep -q "strata decode" "$last" && sed -n '/^(/,$p' "$last"
  tail -3 "$out"/logs/bench-*.log 2>/dev/null
}
