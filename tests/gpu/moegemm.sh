#!/usr/bin/env bash
# tests/gpu/moegemm.sh: the grouped-experts GPU session (issue 25) in one command, for a lent GPU machine:
# builds strata and moe_gpu_test, runs moe_gpu_test (the CUDA MoE FFN and Backend::expert_ffn's grouped GEMV
# and grouped GEMM against the CPU backend, whole MoE models, offloaded experts), then scripts/bench-moe.sh on
# the Qwen3-30B-A3B and Mixtral-8x7B shapes (a few layers, batch 1 and 64 and a 2048-token prefill), each run
# also with the per-expert matmuls (--kernel-options moe_grouped=0) as the baseline in the same session, then
# the other grouped forms (moe_gemm=1, moe_gemv_max_rows=8) while the budget lasts.
# Every phase runs under `timeout` within BUDGET_S seconds, so the table prints before the call's limit.
# Usage: OUT=/some/dir [BUDGET_S=340] [MODELS=/tmp/models] tests/gpu/moegemm.sh
set -u
cd "$(dirname "$0")/../.."
root=$(pwd)
source tests/gpu/session_lib.sh  # elapsed, left, note, summary
budget=${BUDGET_S:-340}
out=${OUT:-$root/build-gpu/moegemm}
mkdir -p "$out/logs"
export NCCL_NVLS_ENABLE=0
B=$root/build-gpu

source tests/gpu/moe_session_lib.sh  # moe_build_and_test, moe_bench_shapes, moe_model_of, moe_summary_head
moe_build_and_test 100 75 "Failure|max \||FAILED|offloaded vs"
moe_bench_shapes 8 3/5 "1 64" moe_grouped=0

# Other forms on the same models while the budget lasts: the tensor-core grouped GEMM (moe_gemm=1) for the
# prefill and batch 64, and the grouped GEMV up to 8 rows per expert at batch 64.
alt=()
for shape in qwen3 mixtral; do
  m=$(moe_model_of "$shape")
  [ -f "$m/model.safetensors" ] || continue
  for form in "prefill moe_gemm=1 --batch 1 --prompt-len 2048 -n 2" "b64 moe_gemm=1 --batch 64 --prompt-len 16 -n 32" \
              "b64 moe_gemv_max_rows=8 --batch 64 --prompt-len 16 -n 32"; do
    read -r tag opts args <<<"$form"
    if [ "$(left)" -lt 20 ]; then note "alt $shape $tag $opts" "skipped (budget)"; continue; fi
    f="$out/bench/alt-$shape-$tag-${opts//=/}.json"
    # shellcheck disable=SC2086
    timeout $(( $(left) - 5 )) "$B/strata" bench decode --model "$m" --device cuda $args --mib 64 --kernel-options "$opts" \
      >"$f" 2>"$f.err"
    alt+=("$(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); \
print(f\"{sys.argv[2]:28s} decode {r['decode_tokens_per_s']:8.0f} tok/s  prefill {r['prefill_tokens_per_s']:8.0f} tok/s\")" \
      "$f" "$shape $tag $opts" 2>/dev/null || echo "$shape $tag $opts: failed")")
  done
  rm -rf "$m"
done

moe_summary_head
# Every run that finished, killed shapes included.
for f in "$out"/bench/*-decode-b*.json "$out"/bench/*-prefill-*.json; do
  [ -f "$f" ] || continue
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"{sys.argv[1].split('/')[-1]:34s} decode \
{r['decode_tokens_per_s']:8.0f} tok/s  prefill {r['prefill_tokens_per_s']:8.0f} tok/s  {r['weight_gbs']:6.0f} GB/s\")" \
    "$f" 2>/dev/null || echo "$f: unreadable"
done
for line in "${alt[@]}"; do echo "$line"; done
