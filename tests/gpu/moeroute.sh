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

source tests/gpu/moe_session_lib.sh  # moe_build_and_test, moe_bench_shapes, moe_model_of, moe_summary_head
moe_build_and_test 150 100 "Failure|max \||FAILED|Expected|Which is|batch "
moe_bench_shapes 25 11/20 "1 16" moe_device_route=0

# Batch 1 with the device routing but no CUDA graphs: the share of the gain the recording brings.
alt=()
for shape in qwen3 mixtral; do
  m=$(moe_model_of "$shape")
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

moe_summary_head
for f in "$out"/bench/*-decode-b*.json; do
  [ -f "$f" ] || continue
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"{sys.argv[1].split('/')[-1]:30s} decode \
{r['decode_tokens_per_s']:8.0f} tok/s {r['weight_gbs']:6.0f} GB/s replays {r.get('graph_replays')}\")" \
    "$f" 2>/dev/null || echo "$f: unreadable"
done
for line in "${alt[@]}"; do echo "$line"; done
