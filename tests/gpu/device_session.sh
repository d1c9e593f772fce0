#!/usr/bin/env bash
# tests/gpu/device_session.sh: the standard first call of a session on a lent GPU machine, in one command:
# the GPU build and tests (tests/gpu/run.sh with STRATA_GPU_UNIT=0 STRATA_GPU_BENCH=0), the decode attention
# per split count (attention_splits), the GEMV chain against the copy rate (gemv_chain), then
# decode_sweep.sh on the 7b-shape preset at BATCHES (default "1 16 64") under VARIANTS (default "default").
# The lent machine returns only a few files from $OUT, so everything is packed into $OUT/session.tgz (logs
# under logs/, the sweep under bench/results/) and a short summary is printed last.
# Usage: OUT=/some/dir [VARIANTS="default|key=value,..."] [BATCHES="1 16"] [MODEL_DIR=/tmp/7b-shape] \
#        [CHAIN_VARIANTS="--rolling 1|--rolling 2"] tests/gpu/device_session.sh
# (VARIANTS: --kernel-options values for decode_sweep.sh; CHAIN_VARIANTS: gemv_chain arguments.)
set -u
cd "$(dirname "$0")/../.."
root=$(pwd)
out=${OUT:-$root/build-gpu/session}
work=$(mktemp -d)
mkdir -p "$out" "$work/logs"
export NCCL_NVLS_ENABLE=0

OUT="$work/logs" STRATA_GPU_UNIT=0 STRATA_GPU_BENCH=0 tests/gpu/run.sh >"$work/logs/run.log" 2>&1
for tool in attention_splits gemv_chain; do
  if [ -x build-gpu/tests/$tool ]; then build-gpu/tests/$tool >"$work/logs/$tool.txt" 2>&1
  else echo "$tool not built" >"$work/logs/$tool.txt"; fi
done
# CHAIN_VARIANTS: more gemv_chain runs, each with one |-separated set of arguments (e.g. "--rolling 1").
if [ -n "${CHAIN_VARIANTS:-}" ] && [ -x build-gpu/tests/gemv_chain ]; then
  IFS='|' read -r -a chain_variants <<<"$CHAIN_VARIANTS"
  for v in "${chain_variants[@]}"; do
    read -r -a chain_args <<<"$v"
    { echo "== gemv_chain $v"; build-gpu/tests/gemv_chain "${chain_args[@]}"; } >>"$work/logs/gemv_chain.txt" 2>&1
  done
fi
before=$(ls -d bench/results/decode-sweep-* 2>/dev/null)
if [ -x build-gpu/strata ]; then
  STRATA=build-gpu/strata MODEL_DIR=${MODEL_DIR:-/tmp/7b-shape} VARIANTS=${VARIANTS:-default} \
    BATCHES=${BATCHES:-1 16 64} tests/gpu/decode_sweep.sh >"$work/logs/decode_sweep.txt" 2>&1
fi
sweeps=()
for d in bench/results/decode-sweep-*; do
  [ -d "$d" ] && ! grep -qxF "$d" <<<"$before" && sweeps+=("$d")
done
tar czf "$out/session.tgz" -C "$work" logs -C "$root" "${sweeps[@]}" 2>/dev/null ||
  tar czf "$out/session.tgz" -C "$work" logs

echo "== summary (everything in $out/session.tgz)"
sed -n '/== summary/,$p' "$work/logs/run.log" | sed 1d
grep -E 'FAILED|Failure' "$work/logs/gpu_test.log" 2>/dev/null | head -5
grep -E '\*rule' "$work/logs/attention_splits.txt" | grep -E 'warps|whole'
cat "$work/logs/gemv_chain.txt"
cat "$work/logs/decode_sweep.txt"
rm -rf "$work"
