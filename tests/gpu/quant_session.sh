#!/usr/bin/env bash
# tests/gpu/quant_session.sh: the quantized-model GPU session (issue 23) in one command, for a lent GPU
# machine: builds strata and the GPU tests, runs the quantized tests (every GGUF block type against the CPU
# backend; quant_mma_gpu_test), kernel_bench --quant and --qmma (GB/s of packed bytes against the copy
# rate), then writes 7b-shape GGUFs (DTYPES, in the background while the tests run) and runs `strata bench
# decode` on each at batch 1 and 16 (prompt 16, 32 new tokens) and a 2048-token prefill (batch 1, 2 new
# tokens), each model as soon as it is written. Stops starting new work after BUDGET_S seconds. Everything
# goes to $OUT/quant.tgz; a summary table is printed last.
# Usage: OUT=/some/dir [DTYPES="q4_0 q4_k_m f16 q8_0 q6_k"] [BUDGET_S=540] [SKIP_TESTS=1] [KB_ARGS=--quick] \
#        tests/gpu/quant_session.sh
set -u
cd "$(dirname "$0")/../.."
root=$(pwd)
start=$(date +%s)
out=${OUT:-$root/build-gpu/quant}
work=$(mktemp -d)
models=${MODELS:-/tmp/quant-models}
budget=${BUDGET_S:-540}
dtypes=${DTYPES:-q4_0 q4_k_m f16 q8_0 q6_k}
mkdir -p "$out" "$work/logs" "$work/bench" "$models"
export NCCL_NVLS_ENABLE=0
B=$root/build-gpu
elapsed() { echo $(( $(date +%s) - start )); }
summary=()
note() { summary+=("$(printf '%-34s %s' "$1" "$2")"); echo "[$(elapsed) s] $1 $2"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$work/logs/gpu.txt"
cmake -S "$root" -B "$B" -G Ninja -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 >"$work/logs/configure.log" 2>&1
cmake --build "$B" -j "$(nproc)" --target strata >"$work/logs/build.log" 2>&1
note "build strata" "rc=$? at $(elapsed) s"

# The models, written while the tests build and run (make-model uses every core; the decode timings below
# run after it has finished).
(
  for d in $dtypes; do
    f=$models/7b-$d.gguf
    t0=$(date +%s)
    "$B/strata" make-model --preset 7b-shape --format gguf --dtype "$d" --out "$f" >>"$work/logs/make_model.log" 2>&1 &&
      echo "$d $(( $(date +%s) - t0 )) s $(stat -c %s "$f") bytes" >>"$work/logs/make_model_times.txt"
  done
) &
maker=$!

cmake --build "$B" -j "$(nproc)" --target cuda_backend_gpu_test quant_mma_gpu_test model_gpu_test kernel_bench >>"$work/logs/build.log" 2>&1
note "build tests" "rc=$? at $(elapsed) s"
grep -E "error|FAILED" "$work/logs/build.log" | head -20
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  "$B/tests/cuda_backend_gpu_test" --gtest_brief=1 \
    --gtest_filter='*Quantized*:*EveryWeightDtype*:*Embed*:*Swiglu*:*Copy*:*OddK*' >"$work/logs/gpu_test.log" 2>&1
  note "cuda_backend_gpu_test (quant)" "rc=$? $(grep -E '^\[  (PASSED|FAILED) ' "$work/logs/gpu_test.log" | tr '\n' ' ')"
  grep -E "Failure|error|differs|FAILED|Expected|Which is|actual" "$work/logs/gpu_test.log" | head -30
  "$B/tests/quant_mma_gpu_test" --gtest_brief=1 >"$work/logs/quant_mma_gpu_test.log" 2>&1
  note "quant_mma_gpu_test" "rc=$? $(grep -E '^\[  (PASSED|FAILED) ' "$work/logs/quant_mma_gpu_test.log" | tr '\n' ' ')"
  grep -E "Failure|mismatch|FAILED" "$work/logs/quant_mma_gpu_test.log" | head -10
  (cd "$B/tests" && STRATA_SOURCE_DIR=$root ./model_gpu_test --gtest_brief=1 --gtest_filter='QuantizedModelOnGpu*' \
     >"$work/logs/model_gpu_test.log" 2>&1)
  note "model_gpu_test (quant)" "rc=$? $(grep -E '^\[  (PASSED|FAILED) ' "$work/logs/model_gpu_test.log" | tr '\n' ' ')"
  grep -E "Failure|max \|gpu|FAILED" "$work/logs/model_gpu_test.log" | head -10
fi
"$B/tests/kernel_bench" --quant ${KB_ARGS:-} >"$work/logs/kernel_bench.log" 2>&1
note "kernel_bench --quant" "rc=$? at $(elapsed) s"
"$B/tests/kernel_bench" --qmma ${KB_ARGS:-} >"$work/logs/kernel_bench_qmma.log" 2>&1
note "kernel_bench --qmma" "rc=$? at $(elapsed) s"

# Batch 1 of every model first, then batch 16, then the prefills; each model as soon as it is written.
for run in "b1 --batch 1 --prompt-len 16 -n 32" "b16 --batch 16 --prompt-len 16 -n 32" "prefill2048 --batch 1 --prompt-len 2048 -n 2"; do
  read -r tag args <<<"$run"
  for d in $dtypes; do
    f=$models/7b-$d.gguf
    while ! grep -q "^$d " "$work/logs/make_model_times.txt" 2>/dev/null && kill -0 $maker 2>/dev/null &&
          [ "$(elapsed)" -le "$budget" ]; do sleep 2; done
    if [ "$(elapsed)" -gt "$budget" ] || ! grep -q "^$d " "$work/logs/make_model_times.txt" 2>/dev/null; then
      note "skipped" "$d $tag (budget or no model)"
      continue
    fi
    # shellcheck disable=SC2086
    "$B/strata" bench decode --model "$f" --device cuda $args --mib 64 >"$work/bench/$d-$tag.json" 2>"$work/bench/$d-$tag.err"
    rc=$?
    python3 - "$work/bench/$d-$tag.json" "$d" "$tag" "$rc" <<'PY' | tee -a "$work/bench/table.txt"
import json, sys
try:
    r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
    print(f"{sys.argv[2]:8s} {sys.argv[3]:12s} decode {r['decode_tokens_per_s']:9.1f} tok/s  weights {r['weight_gbs']:7.0f} GB/s"
          f"  ({r['weight_bytes_per_step'] / 1e9:.2f} GB/step)  prefill {r['prefill_tokens_per_s']:9.1f} tok/s  gpu ms {r['graph_gpu_ms']:.3f}")
except Exception as e:
    print(f"{sys.argv[2]:8s} {sys.argv[3]:12s} FAILED rc={sys.argv[4]} ({e})")
PY
  done
done
note "make-model" "at $(elapsed) s: $(tr '\n' ';' <"$work/logs/make_model_times.txt" 2>/dev/null)"
kill $maker 2>/dev/null

cp -r "$work/bench" "$work/logs/" 2>/dev/null
tar czf "$out/quant.tgz" -C "$work" logs
echo
echo "== summary ($(elapsed) s; everything in $out/quant.tgz)"
for line in "${summary[@]}"; do echo "$line"; done
cat "$work/bench/table.txt" 2>/dev/null
sed -n '/^kernel /,$p' "$work/logs/kernel_bench.log"
grep -E "^d2d" "$work/logs/kernel_bench.log"
sed -n '/^type /,$p' "$work/logs/kernel_bench_qmma.log"
rm -rf "$work"
