#!/bin/bash
# One round: single-rank and PP2 `strata generate` of the 8-layer 7b-shape w4a16 checkpoint with binary $1
# (label $2), under /usr/bin/time -v; logs to $3/<label>-{single,pp2}-<round>.log.
# usage: run.sh BIN LABEL OUTDIR ROUND [MODEL] [PLAN]
set -u
BIN=$1 LABEL=$2 OUT=$3 ROUND=$4
MODEL=${5:-/tmp/hfqmem/w4a16}
PLAN=${6:-/tmp/hfqmem/pp2.yaml}
ARGS=(generate --model "$MODEL" --prompt "Once upon a time" -n 16 --print-ids --quiet)
/usr/bin/time -v "$BIN" "${ARGS[@]}" > "$OUT/$LABEL-single-$ROUND.log" 2>&1
# Each rank under its own time -v (per-rank peak RSS); the outer one gives the wall time of the whole job.
/usr/bin/time -v mpirun --allow-run-as-root --oversubscribe -np 2 /usr/bin/time -v "$BIN" "${ARGS[@]}" --plan "$PLAN" \
  > "$OUT/$LABEL-pp2-$ROUND.log" 2>&1
