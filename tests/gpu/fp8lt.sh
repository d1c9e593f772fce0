#!/usr/bin/env bash
# tests/gpu/fp8lt.sh: one device call (under 7 minutes on an H100) for FP8 weights on the e4m3 tensor cores
# (fp8_cublaslt: LtGemm::run_fp8, runtime/cuda/gemm.cpp): builds strata, fp8_gpu_test and kernel_bench (sm_90);
# writes a 4-layer 7b-shape bf16 model and its FP8 quantization (`strata quantize --type fp8`, per-channel
# weights, dynamic activations) in the background; runs fp8_gpu_test (the GEMM against a double host product and
# the dequantize path at M 13..2048, N 256 / 4224, K 512 / 4096, with fp8_cublaslt 0, 1, 2; the FP8 fixture's
# logits with each), kernel_bench --fp8 (M = 2048 on the 7b layer shapes, TFLOP/s of bf16 cuBLAS, dequantize +
# cuBLAS and the two FP8 forms), then `strata bench decode` prefill of 2048 tokens on the bf16 model and on the
# FP8 one with fp8_cublaslt=0, 1 and 2, twice each; a short table is printed last. Every step is under timeout.
# Usage: OUT=/some/dir [BUDGET_S=400] bash tests/gpu/fp8lt.sh
set -u
cd "$(dirname "$0")/../.."
root=$(pwd)
source tests/gpu/session_lib.sh  # elapsed, left, note, summary
out=${OUT:-$(pwd)/build-gpu/fp8lt}
budget=${BUDGET_S:-400}
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0
B=build-gpu
M16=/tmp/fp8lt-7b4-bf16
M8=/tmp/fp8lt-7b4-fp8

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  >"$out/configure.log" 2>&1
timeout $(( $(left) - 150 )) cmake --build $B -j16 --target strata >"$out/build.log" 2>&1
note "build strata" "rc=$? at $(elapsed) s"
# The models (4 layers of the 7b shape: the prefill's matmuls are the 7b ones), niced behind the test builds.
rm -rf $M16 $M8
( timeout $(( $(left) - 60 )) nice -n 19 $B/strata make-model --preset 7b-shape --layers 4 --dtype bf16 --out $M16 \
    >"$out/make_model.log" 2>&1 &&
  timeout $(( $(left) - 45 )) nice -n 19 $B/strata quantize --model $M16 --type fp8 --out $M8 --force \
    >"$out/quantize.log" 2>&1 && echo "$(elapsed)" >"$out/made" ) &
maker=$!
timeout $(( $(left) - 120 )) cmake --build $B -j16 --target fp8_gpu_test kernel_bench >>"$out/build.log" 2>&1
note "build tests" "rc=$? at $(elapsed) s"
grep -E "error|FAILED" "$out/build.log" | head -20

(cd $B/tests && STRATA_SOURCE_DIR=$root timeout 150 ./fp8_gpu_test --gtest_brief=1) >"$out/fp8_gpu_test.log" 2>&1
note "fp8_gpu_test" "rc=$? $(grep -E '^\[  (PASSED|FAILED) ' "$out/fp8_gpu_test.log" | tr '\n' ' ')"
grep -E "rel RMS|Failure|FAILED|Which is|Expected|warn" "$out/fp8_gpu_test.log" | head -30

timeout $(( $(left) > 150 ? 90 : 45 )) $B/tests/kernel_bench --fp8 --quick >"$out/kernel_bench_fp8.log" 2>&1
note "kernel_bench --fp8" "rc=$? at $(elapsed) s"
cat "$out/kernel_bench_fp8.log"

while [ ! -f "$out/made" ] && [ "$(left)" -gt 40 ] && kill -0 $maker 2>/dev/null; do sleep 2; done
if [ -f "$out/made" ]; then made="written by $(cat "$out/made") s"
else made="not written ($(tail -2 "$out/make_model.log" "$out/quantize.log" 2>/dev/null | tr '\n' ' '))"; fi
note "fp8 model" "$made"
table=()
prefill() {  # model label kernel-options pass
  local f="$out/prefill-$2-$4.json"
  timeout $(( $(left) - 5 )) $B/strata bench decode --model "$1" --device cuda --batch 1 --prompt-len 2048 -n 2 \
    --mib 64 --kernel-options "$3" >"$f" 2>"${f%.json}.err"
  local rc=$?
  table+=("$(python3 - "$f" "$2" "$4" "$rc" <<'PY'
import json, sys
try:
    r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
    print(f"prefill 2048 {sys.argv[2]:26s} pass {sys.argv[3]}: {r['prefill_tokens_per_s']:9.1f} tok/s")
except Exception as e:
    print(f"prefill 2048 {sys.argv[2]:26s} pass {sys.argv[3]}: FAILED rc={sys.argv[4]} ({e})")
PY
)")
}
if [ -f "$out/made" ]; then
  for pass in 1 2; do
    [ "$(left)" -lt 20 ] && break
    prefill $M16 bf16 fp8_cublaslt=0 $pass
    for mode in 0 1 2; do
      [ "$(left)" -lt 15 ] && break 2
      prefill $M8 "fp8,fp8_cublaslt=$mode" fp8_cublaslt=$mode $pass
    done
  done
fi

echo
echo "== summary ($(elapsed) s)"
for s in "${summary[@]}"; do echo "$s"; done
grep -A5 "^7b layer" "$out/kernel_bench_fp8.log"
for s in "${table[@]}"; do echo "$s"; done
