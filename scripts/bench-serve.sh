#!/usr/bin/env bash
# scripts/bench-serve.sh: latency against load for `strata serve`. Starts a server on MODEL (or uses
# URL), sweeps Poisson arrival rates with `strata bench serve`, writes one JSON line per rate to
# OUT/bench-serve.jsonl and plots TTFT / TPOT / latency p50-p99 against the offered rate to
# OUT/bench-serve.png (python3 + matplotlib; installed with pip when missing, else skipped).
#
#   scripts/bench-serve.sh [--model PATH | --url URL] [--rates "1 2 4 8"] [--requests N]
#                          [--prompt-len L] [--output-len O] [--out DIR] [--strata BIN]
set -euo pipefail

STRATA=${STRATA:-build/strata}
MODEL="" URL="" RATES="1 2 4 8 16" REQUESTS=64 PROMPT_LEN=64 OUTPUT_LEN=64 OUT=bench-results
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) MODEL=$2; shift 2 ;;
    --url) URL=$2; shift 2 ;;
    --rates) RATES=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --prompt-len) PROMPT_LEN=$2; shift 2 ;;
    --output-len) OUTPUT_LEN=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --strata) STRATA=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "bench-serve.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"

SERVER_PID=""
cleanup() { if [[ -n "$SERVER_PID" ]]; then kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT

if [[ -z "$URL" ]]; then
  if [[ -z "$MODEL" ]]; then
    MODEL="$OUT/tiny-model"
    [[ -d "$MODEL" ]] || "$STRATA" make-model --preset tiny --out "$MODEL" >/dev/null
  fi
  "$STRATA" serve --model "$MODEL" --port 0 >"$OUT/serve.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 600); do
    PORT=$(sed -n 's/.*listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$OUT/serve.log" | head -1)
    if [[ -n "$PORT" ]] && curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then break; fi
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "the server exited:" >&2; cat "$OUT/serve.log" >&2; exit 1; }
    sleep 0.2
  done
  URL="http://127.0.0.1:$PORT"
fi
echo "bench-serve: $URL, rates: $RATES, $REQUESTS requests each, prompt ~$PROMPT_LEN, output $OUTPUT_LEN tokens"

: >"$OUT/bench-serve.jsonl"
for rate in $RATES; do
  "$STRATA" bench serve --url "$URL" --rate "$rate" --requests "$REQUESTS" --prompt-len "$PROMPT_LEN" \
    --output-len "$OUTPUT_LEN" | tee -a "$OUT/bench-serve.jsonl"
done
curl -sf "$URL/metrics" >"$OUT/metrics.txt" || true

if ! python3 -c 'import matplotlib' 2>/dev/null; then
  python3 -m pip install --quiet matplotlib >/dev/null 2>&1 || true
fi
if python3 -c 'import matplotlib' 2>/dev/null; then
  python3 - "$OUT/bench-serve.jsonl" "$OUT/bench-serve.png" <<'PY'
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rate = [r["rate"] for r in rows]
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for ax, key, title in zip(axes, ["ttft_ms", "tpot_ms", "latency_ms"],
                          ["time to first token", "time per output token", "end-to-end latency"]):
    for q in ["p50", "p95", "p99"]:
        ax.plot(rate, [r[key][q] for r in rows], marker="o", label=q)
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel("ms")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
ax2 = axes[2].twinx()
ax2.plot(rate, [r["output_tokens_per_s"] for r in rows], color="gray", linestyle="--", label="output tok/s")
ax2.set_ylabel("output tokens/s")
fig.suptitle("strata serve: latency against load (%s)" % rows[0]["url"])
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=120)
print("bench-serve: plot in", sys.argv[2])
PY
else
  echo "bench-serve: python3 with matplotlib is not available (pip install failed); skipping the plot" >&2
fi
echo "bench-serve: results in $OUT/bench-serve.jsonl"
