#!/usr/bin/env bash
# scripts/bench-router.sh: `strata router --spawn 2` (two `strata serve` replicas of MODEL on this
# machine) under Poisson load from `strata bench serve`, in three phases: before, during (one replica is
# killed with SIGKILL DELAY seconds into the phase; the router restarts it) and after (both back).
# Prints per phase: requests sent, completed, failed, the router's retries, p50/p99 latency and TTFT;
# and the time from the kill to the replica's ejection and to its re-admission. Writes OUT/router.jsonl.
#
#   scripts/bench-router.sh [--model PATH] [--rate R] [--requests N] [--output-len O] [--delay S]
#                           [--out DIR] [--strata BIN]
# bench serve streams every request: a stream the killed replica was writing is cut and counts as
# failed (the router ends it with an error event); requests not yet streaming are retried elsewhere.
set -euo pipefail

STRATA=${STRATA:-build/strata}
MODEL="" RATE=8 REQUESTS=96 OUTPUT_LEN=32 DELAY=2 OUT=bench-results/router
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) MODEL=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --output-len) OUTPUT_LEN=$2; shift 2 ;;
    --delay) DELAY=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --strata) STRATA=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "bench-router.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
if [[ -z "$MODEL" ]]; then
  MODEL="$OUT/tiny-model"
  [[ -d "$MODEL" ]] || "$STRATA" make-model --preset tiny --out "$MODEL" >/dev/null
fi

ROUTER_PID=""
cleanup() { if [[ -n "$ROUTER_PID" ]]; then kill -TERM "$ROUTER_PID" 2>/dev/null || true; wait "$ROUTER_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT
"$STRATA" router --spawn 2 --model "$MODEL" --port 0 --health-interval 0.2 --health-timeout 0.5 >"$OUT/router.log" 2>&1 &
ROUTER_PID=$!
PORT=""
for _ in $(seq 1 300); do
  PORT=$(sed -n 's/^strata router: listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$OUT/router.log" | head -1)
  [[ -n "$PORT" ]] && break
  sleep 0.1
done
[[ -n "$PORT" ]] || { echo "bench-router.sh: the router did not start; see $OUT/router.log" >&2; exit 1; }
URL="http://127.0.0.1:$PORT"
metric() {  # sum of a router metric's samples
  curl -s "$URL/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" {s += $2} END {print s + 0}'
}
wait_healthy() {  # until N replicas are in rotation
  for _ in $(seq 1 1200); do [[ "$(metric strata_router_replica_healthy)" == "$1" ]] && return 0; sleep 0.1; done
  echo "bench-router.sh: never saw $1 healthy replicas; see $OUT/router.log" >&2; exit 1
}
wait_healthy 2

: >"$OUT/router.jsonl"
phase() {  # name [kill]
  local retries0 failed0 report
  retries0=$(metric strata_router_retries_total)
  failed0=$(metric strata_router_failed_total)
  "$STRATA" bench serve --url "$URL" --rate "$RATE" --requests "$REQUESTS" --output-len "$OUTPUT_LEN" \
    --output-dist fixed >"$OUT/$1.json" &
  local bench=$!
  if [[ "${2:-}" == kill ]]; then
    sleep "$DELAY"
    local victim t0 ejected="" readmitted=""
    victim=$(pgrep -P "$ROUTER_PID" | head -1)
    t0=$(date +%s.%N)
    kill -9 "$victim"
    while [[ -z "$readmitted" ]]; do
      local now healthy
      now=$(date +%s.%N); healthy=$(metric strata_router_replica_healthy)
      [[ -z "$ejected" && "$healthy" == 1 ]] && ejected=$(awk "BEGIN {print $now - $t0}")
      [[ -n "$ejected" && "$healthy" == 2 ]] && readmitted=$(awk "BEGIN {print $now - $t0}")
      [[ $(awk "BEGIN {print ($now - $t0 > 120)}") == 1 ]] && break
      sleep 0.05
    done
    echo "{\"event\": \"kill -9 pid $victim\", \"eject_s\": ${ejected:-null}, \"readmit_s\": ${readmitted:-null}}" >>"$OUT/router.jsonl"
  fi
  wait "$bench" || true  # bench serve exits non-zero when requests failed; the report says how many
  report=$(cat "$OUT/$1.json")
  echo "{\"phase\": \"$1\", \"retries\": $(( $(metric strata_router_retries_total) - retries0 )), \"router_failed\": $(( $(metric strata_router_failed_total) - failed0 )), \"bench\": $report}" >>"$OUT/router.jsonl"
}
phase before
phase during kill
wait_healthy 2
phase after

python3 - "$OUT/router.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'phase':8} {'sent':>5} {'done':>5} {'failed':>6} {'retried':>7} {'p50 ms':>8} {'p99 ms':>8} {'ttft p99':>8}")
for r in rows:
    if "event" in r:
        print(f"  {r['event']}: out of rotation after {r['eject_s']} s, back after {r['readmit_s']} s")
        continue
    b = r["bench"]; lat = b.get("latency_ms") or {}; ttft = b.get("ttft_ms") or {}
    f = lambda v: "-" if v is None else f"{v:.1f}"
    print(f"{r['phase']:8} {b['requests']:>5} {b['completed']:>5} {b['failed']:>6} {r['retries']:>7} "
          f"{f(lat.get('p50')):>8} {f(lat.get('p99')):>8} {f(ttft.get('p99')):>8}")
EOF
