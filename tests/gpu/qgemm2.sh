#!/usr/bin/env bash
# tests/gpu/qgemm2.sh: one device call (about 5 minutes on an H100) for the tensor-core quantized GEMM's new
# types (Q6_K, Q5_K, Q4_1, Q5_0, Q5_1; runtime/cuda/qgemm_mma.cu) and its split-K cost model: builds strata,
# quant_mma_gpu_test, model_gpu_test and kernel_bench; writes a 7b-shape Q4_K_M GGUF in the background; runs
# quant_mma_gpu_test and model_gpu_test's quantized cases; kernel_bench --qmma for the new types (and Q8_0 /
# Q4_K for the split sweep) at M = 1, 4, 8, 16, 32 on the 7b layer shapes with the copy-rate ceiling it
# prints; then `strata bench decode` on the Q4_K_M model at batch 16 with the GEMM on (quant_mma_max_rows=32)
# and off (0) alternately in the same run. Every step is under `timeout`; a short table is printed last.
# Usage: OUT=/some/dir [BUDGET_S=280] bash tests/gpu/qgemm2.sh
set -u
cd "$(dirname "$0")/../.."
root=$(pwd)
NOTE_WIDTH=30
source tests/gpu/session_lib.sh  # elapsed, left, note, summary
out=${OUT:-$(pwd)/build-gpu/qgemm2}
budget=${BUDGET_S:-280}
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0
B=build-gpu
M=/tmp/7b-q4_k_m.gguf

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  >"$out/configure.log" 2>&1
# strata first (the model is written while the rest builds, niced so the timed launches keep their core), then
# the three test programs.
timeout $(( $(left) - 60 )) cmake --build $B -j16 --target strata >"$out/build.log" 2>&1
note "build strata" "rc=$? at $(elapsed) s"
( timeout $(( $(left) - 40 )) nice -n 19 $B/strata make-model --preset 7b-shape --format gguf --dtype q4_k_m --out $M \
    >"$out/make_model.log" 2>&1 && echo "$(elapsed)" >"$out/made" ) &
maker=$!
timeout $(( $(left) - 50 )) cmake --build $B -j16 --target quant_mma_gpu_test model_gpu_test kernel_bench \
  >>"$out/build.log" 2>&1
note "build tests" "rc=$? at $(elapsed) s"
grep -E "error|FAILED" "$out/build.log" | head -20

timeout 60 $B/tests/quant_mma_gpu_test --gtest_brief=1 >"$out/quant_mma_gpu_test.log" 2>&1
note "quant_mma_gpu_test" "rc=$? $(grep -E '^\[  (PASSED|FAILED) ' "$out/quant_mma_gpu_test.log" | tr '\n' ' ')"
grep -E "Failure|mismatch|FAILED|Which is|Expected" "$out/quant_mma_gpu_test.log" | head -12
(cd $B/tests && STRATA_SOURCE_DIR=$root timeout 60 ./model_gpu_test --gtest_brief=1 \
   --gtest_filter='QuantizedModelOnGpu*') >"$out/model_gpu_test.log" 2>&1
note "model_gpu_test (quant)" "rc=$? $(grep -E '^\[  (PASSED|FAILED) ' "$out/model_gpu_test.log" | tr '\n' ' ')"
grep -E "Failure|FAILED" "$out/model_gpu_test.log" | head -10

# The new types' table, then the split sweep on the types whose stages fit one block per SM (where the
# cost model's choice matters most: Q8_0, Q6_K) and Q4_K (two blocks per SM below M = 17).
timeout $(( $(left) > 120 ? 60 : 30 )) $B/tests/kernel_bench --qmma --quick --types=q6_k,q5_k,q4_1,q5_0,q5_1 \
  --rows=1,4,8,16,32 >"$out/kernel_bench_qmma.log" 2>&1
note "kernel_bench --qmma" "rc=$? at $(elapsed) s"
timeout 40 $B/tests/kernel_bench --qmma --quick --types=q8_0,q6_k,q4_k --rows=1,16,32 --qmma-splits \
  >"$out/kernel_bench_splits.log" 2>&1
note "kernel_bench --qmma-splits" "rc=$? at $(elapsed) s"

# Whole model: Q4_K_M (Q4_K, Q6_K for the head and half the attn_v / ffn_down), batch 16, GEMM on / off.
while [ ! -f "$out/made" ] && [ "$(left)" -gt 35 ] && kill -0 $maker 2>/dev/null; do sleep 2; done
note "make-model q4_k_m" "$( [ -f "$out/made" ] && echo "written by $(cat "$out/made") s, $(stat -c %s $M) bytes" || echo "not written ($(tail -1 "$out/make_model.log" 2>/dev/null))")"
table=()
if [ -f "$out/made" ]; then
  for pass in 1 2; do
    for ko in quant_mma_max_rows=32 quant_mma_max_rows=0; do
      [ "$(left)" -lt 15 ] && break 2
      f="$out/decode-b16-$ko-$pass.json"
      timeout $(( $(left) - 5 )) $B/strata bench decode --model $M --device cuda --batch 16 --prompt-len 16 -n 32 \
        --mib 64 --kernel-options $ko >"$f" 2>"${f%.json}.err"
      rc=$?
      table+=("$(python3 - "$f" "$ko" "$pass" "$rc" <<'PY'
import json, sys
try:
    r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
    print(f"q4_k_m b16 {sys.argv[2]:22s} pass {sys.argv[3]}: decode {r['decode_tokens_per_s']:8.1f} tok/s"
          f"  weights {r['weight_gbs']:6.0f} GB/s  gpu ms {r['graph_gpu_ms']:.3f}")
except Exception as e:
    print(f"q4_k_m b16 {sys.argv[2]:22s} pass {sys.argv[3]}: FAILED rc={sys.argv[4]} ({e})")
PY
)")
    done
  done
fi

echo
echo "== qgemm2 summary ($(elapsed) s)"
for line in "${summary[@]}"; do echo "$line"; done
grep -E "^d2d" "$out/kernel_bench_qmma.log"
sed -n '/^type /,/^(vs old/p' "$out/kernel_bench_qmma.log"
sed -n '/^split-K/,$p' "$out/kernel_bench_splits.log"
for line in "${table[@]}"; do echo "$line"; done
