#!/usr/bin/env bash
# tests/gpu/moeroute.sh: the device-routed MoE decode session (issue 25) in one command, for a lent GPU
# machine: builds strata and moe_gpu_test, runs moe_gpu_test (the device routing against the CPU backend and
# the host routing, MoE decode steps from CUDA graphs and not), then scripts/bench-moe.sh on the Qwen3-30B-A3B
# (4 layers) and Mixtral-8x7B (2 layers) shapes at batch 1 and 16 with the host routing
# (--kernel-options moe_device_route=0) as the baseline in the same session, then the device routing without
# CUDA graphs at batch 1 (what the graphs add) while the budget lasts.
# Every phase runs under `timeout` within BUDGET_S seconds, so the table prints before the call's limit.
# Usage: OUT=/some/dir [BUDGET_S=400] [MODELS=/tmp/models] tests/gpu/moeroute.sh
set -u
cd "$(dirname "$0")/../.."
root=$(pwd)
source tests/gpu/session_lib.sh  # elapsed, left, note, summary
budget=${BUDGET_S:-400}
out=${OUT:-$root/build-gpu/moeroute}
mkdir -p "$out/logs"
export NCCL_NVLS_ENABLE=0
B=$root/build-gpu

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/logs/gpu.txt"
cmake -S "$root" -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  >"$out/logs/configure.log" 2>&1
timeout $(( $(left) - 150 )) cmake --build "$B" -j "$(nproc)" --target strata moe_gpu_test >"$out/logs/build.log" 2>&1
note "build" "rc=$? at $(elapsed) s"
grep -E "error|FAILED" "$out/logs/build.log" | head -20

(cd "$B/tests" && STRATA_SOURCE_DIR=$root timeout 100 ./moe_gpu_test --gtest_brief=1) >"$out/logs/moe_gpu_test.log" 2>&1
note "moe_gpu_test" "rc=$? $(grep -E '^\[  (PASSED|FAILED) ' "$out/logs/moe_gpu_test.log" | tr '\n' ' ')"
grep -E "Failure|max \||FAILED|Expected|Which is|batch " "$out/logs/moe_gpu_test.log" | head -40

models=${MODELS:-/tmp/models}
for shape in qwen3 mixtral; do
  t=$(( $(left) - 25 ))
  [ "$shape" = qwen3 ] && t=$(( t * 11 / 20 ))  # leave the Mixtral shape its share
  if [ "$t" -lt 40 ]; then note "bench $shape" "skipped (budget)"; continue; fi
  STRATA_GPU_BUILD=$B MODELS=$models MIXTRAL_LAYERS=2 QWEN3_LAYERS=4 SKIP_PEER=1 SKIP_OFFLOAD=1 KEEP_MODELS=1 \
    BATCHES="1 16" BASELINE_OPTIONS=moe_device_route=0 RESULTS="$out/bench" SHAPES=$shape \
    timeout "$t" bash scripts/bench-moe.sh >"$out/logs/bench-$shape.log" 2>&1
  note "bench $shape" "rc=$? at $(elapsed) s"
done

# Batch 1 with the device routing but no CUDA graphs: the share of the gain the recording brings.
alt=()
for shape in qwen3 mixtral; do
  case $shape in qwen3) m=$models/qwen3-30b-a3b-shape-L4 ;; *) m=$models/mixtral-8x7b-shape-L2 ;; esac
  [ -f "$m/model.safetensors" ] || continue
  if [ "$(left)" -lt 15 ]; then note "alt $shape graphs off" "skipped (budget)"; continue; fi
  f="$out/bench/alt-$shape-b1-graphs-off.json"
  timeout $(( $(left) - 5 )) "$B/strata" bench decode --model "$m" --device cuda --batch 1 --prompt-len 16 -n 32 \
    --mib 64 --cuda-graphs off >"$f" 2>"$f.err"
  alt+=("$(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); \
print(f\"{sys.argv[2]:28s} decode {r['decode_tokens_per_s']:8.0f} tok/s  {r['weight_gbs']:6.0f} GB/s\")" \
    "$f" "$shape b1 graphs off" 2>/dev/null || echo "$shape b1 graphs off: failed")")
  rm -rf "$m"
done

echo
echo "== summary ($(elapsed) s; logs and JSON in $out)"
for line in "${summary[@]}"; do echo "$line"; done
last=$(ls -t "$out"/logs/bench-*.log 2>/dev/null | head -1)
[ -n "$last" ] && grep -q "strata decode" "$last" && sed -n '/^(/,$p' "$last"
tail -3 "$out"/logs/bench-*.log 2>/dev/null
for f in "$out"/bench/*-decode-b*.json; do
  [ -f "$f" ] || continue
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"{sys.argv[1].split('/')[-1]:30s} decode \
{r['decode_tokens_per_s']:8.0f} tok/s {r['weight_gbs']:6.0f} GB/s replays {r.get('graph_replays')}\")" \
    "$f" 2>/dev/null || echo "$f: unreadable"
done
for line in "${alt[@]}"; do echo "$line"; done
