#!/usr/bin/env bash
# Device call 1 (helper cudaopts): builds the cudaopts branch (GPU targets) and main at cc9a9a3 (strata only),
# then runs the branch's GPU tests (tests/gpu/run.sh without the CPU unit tests and the kernel bench).
set -u
R=$(pwd); H=$R/build-cudaopts
export NCCL_NVLS_ENABLE=0
mkdir -p "$OUT/logs"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
t0=$(date +%s)
# main at cc9a9a3 (the benchmark's "before"), strata only, beside the branch's build
( cmake -S "$H/base" -B "$R/build-co-base" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DBUILD_TESTING=OFF >"$OUT/logs/base-configure.log" 2>&1 &&
  cmake --build "$R/build-co-base" -j 6 --target strata >"$OUT/logs/base-build.log" 2>&1; echo "base build rc=$? $(( $(date +%s) - t0 )) s" >"$OUT/logs/base-build.rc" ) &
cd "$H/src"
STRATA_GPU_BUILD=$R/build-co-mine OUT=$OUT/logs STRATA_GPU_UNIT=0 STRATA_GPU_BENCH=0 tests/gpu/run.sh >"$OUT/run.txt" 2>&1
echo "run.sh done $(( $(date +%s) - t0 )) s" >>"$OUT/run.txt"
# the tools built by run.sh: a quick pass of each (their own correctness columns)
timeout 60 "$R/build-co-mine/tests/attention_splits" >"$OUT/logs/attention_splits.txt" 2>&1; echo "attention_splits rc=$?" >>"$OUT/run.txt"
timeout 60 "$R/build-co-mine/tests/gemv_chain" >"$OUT/logs/gemv_chain.txt" 2>&1; echo "gemv_chain rc=$?" >>"$OUT/run.txt"
wait
cat "$OUT/logs/base-build.rc" >>"$OUT/run.txt"
cd "$OUT" && tar czf call1-logs.tgz logs && rm -rf logs
sed -n '/== summary/,$p' "$OUT/run.txt"; tail -4 "$OUT/run.txt"
grep -E "FAILED|error:" "$OUT/run.txt" | head -20
#!/usr/bin/env bash
# Device call 2 (helper cudaopts): scripts/bench-gpu.sh of main at cc9a9a3 (before) and of the cudaopts branch
# (after) on the same machine, alternating, one shared 7b-shape model; builds whichever strata is missing.
set -u
R=$(pwd); H=$R/build-cudaopts
export NCCL_NVLS_ENABLE=0 SKIP_PEER=1 MODEL_DIR=/tmp/7b-shape
t0=$(date +%s)
run() {  # $1: base|src, $2: build dir, $3: tag
  mkdir -p "$OUT/$3"
  (cd "$H/$1" && STRATA_GPU_BUILD=$2 OUT=$OUT/$3 scripts/bench-gpu.sh) >"$OUT/$3/out.txt" 2>&1
  echo "$3 rc=$? at $(( $(date +%s) - t0 )) s"; tail -8 "$OUT/$3/out.txt"
}
if [ ! -x "$R/build-co-base/strata" ] || [ ! -x "$R/build-co-mine/strata" ]; then
  for t in base:build-co-base src:build-co-mine; do
    d=$R/${t#*:}; s=$H/${t%%:*}
    [ -x "$d/strata" ] || { cmake -S "$s" -B "$d" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES=90 -DBUILD_TESTING=OFF >/dev/null 2>&1; cmake --build "$d" -j 8 --target strata >/dev/null 2>&1 & }
  done
  wait; echo "built at $(( $(date +%s) - t0 )) s"
fi
run base "$R/build-co-base" before-1
run src "$R/build-co-mine" after-1
if [ $(( $(date +%s) - t0 )) -lt 330 ]; then run base "$R/build-co-base" before-2; run src "$R/build-co-mine" after-2; fi
