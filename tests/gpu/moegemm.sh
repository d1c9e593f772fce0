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

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/logs/gpu.txt"
cmake -S "$root" -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  >"$out/logs/configure.log" 2>&1
timeout $(( $(left) - 100 )) cmake --build "$B" -j "$(nproc)" --target strata moe_gpu_test >"$out/logs/build.log" 2>&1
note "build" "rc=$? at $(elapsed) s"
grep -E "error|FAILED" "$out/logs/build.log" | head -20

(cd "$B/tests" && STRATA_SOURCE_DIR=$root timeout 75 ./moe_gpu_test --gtest_brief=1) >"$out/logs/moe_gpu_test.log" 2>&1
note "moe_gpu_test" "rc=$? $(grep -E '^\[  (PASSED|FAILED) ' "$out/logs/moe_gpu_test.log" | tr '\n' ' ')"
grep -E "Failure|max \||FAILED|offloaded vs" "$out/logs/moe_gpu_test.log" | head -40

models=${MODELS:-/tmp/models}
for shape in qwen3 mixtral; do
  t=$(( $(left) - 8 ))
  [ "$shape" = qwen3 ] && t=$(( t * 3 / 5 ))  # leave the Mixtral shape its share
  if [ "$t" -lt 40 ]; then note "bench $shape" "skipped (budget)"; continue; fi
  STRATA_GPU_BUILD=$B MODELS=$models MIXTRAL_LAYERS=2 QWEN3_LAYERS=4 SKIP_PEER=1 SKIP_OFFLOAD=1 KEEP_MODELS=1 \
    BATCHES="1 64" BASELINE_OPTIONS=moe_grouped=0 RESULTS="$out/bench" SHAPES=$shape \
    timeout "$t" bash scripts/bench-moe.sh >"$out/logs/bench-$shape.log" 2>&1
  note "bench $shape" "rc=$? at $(elapsed) s"
done

# Other forms on the same models while the budget lasts: the tensor-core grouped GEMM (moe_gemm=1) for the
# prefill and batch 64, and the grouped GEMV up to 8 rows per expert at batch 64.
alt=()
for shape in qwen3 mixtral; do
  case $shape in qwen3) m=$models/qwen3-30b-a3b-shape-L4 ;; *) m=$models/mixtral-8x7b-shape-L2 ;; esac
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

echo
echo "== summary ($(elapsed) s; logs and JSON in $out)"
for line in "${summary[@]}"; do echo "$line"; done
# The last bench's table (it lists every shape finished in $out/bench), else whatever runs finished.
last=$(ls -t "$out"/logs/bench-*.log 2>/dev/null | head -1)
[ -n "$last" ] && grep -q "strata decode" "$last" && sed -n '/^(/,$p' "$last"
tail -3 "$out"/logs/bench-*.log 2>/dev/null
# Every run that finished, killed shapes included.
for f in "$out"/bench/*-decode-b*.json "$out"/bench/*-prefill-*.json; do
  [ -f "$f" ] || continue
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"{sys.argv[1].split('/')[-1]:34s} decode \
{r['decode_tokens_per_s']:8.0f} tok/s  prefill {r['prefill_tokens_per_s']:8.0f} tok/s  {r['weight_gbs']:6.0f} GB/s\")" \
    "$f" 2>/dev/null || echo "$f: unreadable"
done
for line in "${alt[@]}"; do echo "$line"; done
