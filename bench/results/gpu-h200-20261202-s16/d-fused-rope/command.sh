# One device call: GPU build and tests, then the decode A/B of the folded rope (results to $OUT as they come).
set -u
res=$OUT
work=$(mktemp -d)
export NCCL_NVLS_ENABLE=0
OUT=$work STRATA_GPU_UNIT=0 STRATA_GPU_BENCH=0 tests/gpu/run.sh >"$work/run.log" 2>&1
sed -n '/== summary/,$p' "$work/run.log" >"$res/tests.txt"
grep -E 'FAILED|Failure' -A6 "$work/gpu_test.log" | head -40 >>"$res/tests.txt"
cat "$res/tests.txt"
STRATA=build-gpu/strata MODEL_DIR=/tmp/7b-shape COPY_GBS=4271 VARIANTS="default|STRATA_FUSED_ROPE_ATTN=0" \
  BATCHES="1 2" tests/gpu/decode_sweep.sh >"$res/sweep.txt" 2>&1
cat "$res/sweep.txt"
tar czf "$res/session.tgz" -C "$work" . -C "$PWD" $(ls -d bench/results/decode-sweep-* 2>/dev/null)
