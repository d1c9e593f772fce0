#!/usr/bin/env bash
# tests/gpu/moegemm.sh: the grouped-experts GPU session (issue 25) in one command, for a lent GPU machine:
# builds strata and moe_gpu_test, runs moe_gpu_test (the CUDA MoE FFN and Backend::expert_ffn's grouped GEMV
# and grouped GEMM against the CPU backend, whole MoE models, offloaded experts), then scripts/bench-moe.sh on
# the Qwen3-30B-A3B and Mixtral-8x7B shapes (a few layers, batch 1 and 64 and a 2048-token prefill), each run
# also with the per-expert matmuls (--kernel-options moe_grouped=0) as the baseline in the same session.
# Every phase runs under `timeout` within BUDGET_S seconds, so the table prints before the call's limit.
# Usage: OUT=/some/dir [BUDGET_S=340] [MODELS=/tmp/models] tests/gpu/moegemm.sh
set -u
cd "$(dirname "$0")/../.."
root=$(pwd)
start=$(date +%s)
budget=${BUDGET_S:-340}
out=${OUT:-$root/build-gpu/moegemm}
mkdir -p "$out/logs"
export NCCL_NVLS_ENABLE=0
B=$root/build-gpu
elapsed() { echo $(( $(date +%s) - start )); }
left() { echo $(( budget - $(elapsed) )); }
summary=()
note() { summary+=("$(printf '%-28s %s' "$1" "$2")"); echo "[$(elapsed) s] $1 $2"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/logs/gpu.txt"
cmake -S "$root" -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  >"$out/logs/configure.log" 2>&1
timeout $(( $(left) - 100 )) cmake --build "$B" -j "$(nproc)" --target strata moe_gpu_test >"$out/logs/build.log" 2>&1
note "build" "rc=$? at $(elapsed) s"
grep -E "error|FAILED" "$out/logs/build.log" | head -20

(cd "$B/tests" && STRATA_SOURCE_DIR=$root timeout 75 ./moe_gpu_test --gtest_brief=1) >"$out/logs/moe_gpu_test.log" 2>&1
note "moe_gpu_test" "rc=$? $(grep -E '^\[  (PASSED|FAILED) ' "$out/logs/moe_gpu_test.log" | tr '\n' ' ')"
grep -E "Failure|max \||FAILED|offloaded vs" "$out/logs/moe_gpu_test.log" | head -40

for shape in qwen3 mixtral; do
  t=$(( $(left) - 8 ))
  if [ "$t" -lt 40 ]; then note "bench $shape" "skipped (budget)"; continue; fi
  STRATA_GPU_BUILD=$B MODELS=${MODELS:-/tmp/models} MIXTRAL_LAYERS=2 QWEN3_LAYERS=4 SKIP_PEER=1 SKIP_OFFLOAD=1 \
    BATCHES="1 64" BASELINE_OPTIONS=moe_grouped=0 RESULTS="$out/bench" SHAPES=$shape \
    timeout "$t" bash scripts/bench-moe.sh >"$out/logs/bench-$shape.log" 2>&1
  note "bench $shape" "rc=$? at $(elapsed) s"
done

echo
echo "== summary ($(elapsed) s; logs and JSON in $out)"
for line in "${summary[@]}"; do echo "$line"; done
# The last bench's table (it lists every shape finished in $out/bench), else whatever runs finished.
last=$(ls -t "$out"/logs/bench-*.log 2>/dev/null | head -1)
if [ -n "$last" ] && grep -q "strata decode" "$last"; then
  sed -n '/^(/,$p' "$last"
else
  for f in "$out"/bench/*-decode-b*.json "$out"/bench/*-prefill-*.json; do
    [ -f "$f" ] || continue
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[1].split('/')[-1], \
round(r['decode_tokens_per_s']), 'decode tok/s', round(r['prefill_tokens_per_s']), 'prefill tok/s')" "$f" 2>/dev/null
  done
  tail -5 "$out"/logs/bench-*.log 2>/dev/null
fi
