#!/usr/bin/env bash
# scripts/profile-gpu.sh: where a decode or prefill step's time goes on a GPU machine. Builds strata with
# CUDA (when $STRATA_GPU_BUILD/strata is missing), makes the 7b-shape model (when absent), then runs
# `strata bench decode` per case twice: plain (wall time per step, forward/sample split) and with
# --profile-ops (GPU time per backend op, from events on the compute stream).
# Env: STRATA_GPU_BUILD (default /tmp/strata-build), MODEL_DIR (default /tmp/7b-shape),
#      CASES ("b1 b16 b64 prefill2048"), N (tokens per sequence, 32).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${STRATA_GPU_BUILD:-/tmp/strata-build}"
model="${MODEL_DIR:-/tmp/7b-shape}"
export NCCL_NVLS_ENABLE=0
if [ ! -x "$build/strata" ] || [ -n "${REBUILD:-}" ]; then
  t0=$(date +%s)
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DBUILD_TESTING=OFF >"$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
  cmake --build "$build" -j "$(nproc)" --target strata >"$build.build.log" 2>&1 || { grep -E "error|FAILED" "$build.build.log" | head -30; exit 1; }
  echo "built in $(( $(date +%s) - t0 )) s"
fi
if [ ! -f "$model/model.safetensors" ]; then
  t0=$(date +%s)
  "$build/strata" make-model --preset 7b-shape --dtype bf16 --out "$model" >/dev/null
  echo "made $model in $(( $(date +%s) - t0 )) s"
fi
for c in ${CASES:-b1 b16 b64 prefill2048}; do
  case "$c" in
    prefill*) args=(--batch 1 --prompt-len "${c#prefill}" -n 2) ;;
    b*) args=(--batch "${c#b}" --prompt-len 16 -n "${N:-32}") ;;
  esac
  echo "== $c: strata bench decode ${args[*]}"
  "$build/strata" bench decode --model "$model" --device cuda "${args[@]}" --mib 64 | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("  plain: %.1f tok/s decode, %.3f ms/step, prefill %.0f tok/s, forward %.3f s, sample %.3f s, decode %.3f s, prefill %.3f s" % (
    r["decode_tokens_per_s"], r["ms_per_step"], r["prefill_tokens_per_s"], r.get("forward_s", 0), r.get("sample_s", 0),
    r["decode_s"], r["prefill_s"]))'
  "$build/strata" bench decode --model "$model" --device cuda "${args[@]}" --mib 64 --profile-ops 2>&1 >/dev/null |
    sed -n '/CUDA op profile/,$p' | head -${ROWS:-18}
done
