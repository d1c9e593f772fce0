#!/usr/bin/env bash
# scripts/bench-serve-gpu.sh: the serving issue's GPU load benchmark. On a GPU machine, with the 7b-shape
# model (made when absent): `strata serve --device cuda`, then `strata bench serve` at concurrency 1
# (the batch-1 rate) and at concurrency C (default 64) with fixed prompt/output lengths, then the peer,
# Hugging Face transformers generate() with static batches of C on the same workload
# (tools/bench/hf_serve_peer.py). Prints a table last; JSON results go to OUT.
# Env: STRATA_GPU_BUILD (default build-gpu), MODEL_DIR (default /tmp/7b-shape), OUT (default
# bench/results/serve-gpu-<host>-<date>), C (64), REQUESTS (128), PROMPT_LEN (128), OUTPUT_LEN (128),
# SKIP_PEER=1.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
build="${STRATA_GPU_BUILD:-$root/build-gpu}"
model="${MODEL_DIR:-/tmp/7b-shape}"
out="${OUT:-bench/results/serve-gpu-$(hostname)-$(date +%Y%m%d-%H%M%S)}"
c="${C:-64}" requests="${REQUESTS:-128}" plen="${PROMPT_LEN:-128}" olen="${OUTPUT_LEN:-128}"
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0
if [ ! -x "$build/strata" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DBUILD_TESTING=OFF >"$out/configure.log" 2>&1
  cmake --build "$build" -j "$(nproc)" --target strata >"$out/build.log" 2>&1
fi
[ -f "$model/model.safetensors" ] || "$build/strata" make-model --preset 7b-shape --dtype bf16 --out "$model" >/dev/null
echo "C=$c REQUESTS=$requests PROMPT_LEN=$plen OUTPUT_LEN=$olen $0" >"$out/command.txt"

"$build/strata" serve --model "$model" --device cuda --port 0 --kv-tokens $(( (c + 8) * (plen + olen + 32) )) \
  >"$out/serve.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
port=""
for _ in $(seq 1 900); do
  port=$(sed -n 's/.*listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$out/serve.log" | head -1)
  if [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then break; fi
  kill -0 $server 2>/dev/null || { echo "server exited"; cat "$out/serve.log"; exit 1; }
  sleep 0.2
done
url="http://127.0.0.1:$port"
common=(--url "$url" --prompt-len "$plen" --output-len "$olen" --prompt-dist fixed --output-dist fixed)
"$build/strata" bench serve "${common[@]}" --concurrency 4 --requests 8 >/dev/null  # warm-up: kernels, graphs
"$build/strata" bench serve "${common[@]}" --concurrency 1 --requests 4 >"$out/strata-c1.json"
"$build/strata" bench serve "${common[@]}" --concurrency "$c" --requests "$requests" >"$out/strata-c$c.json"
curl -sf "$url/metrics" >"$out/metrics.txt" || true
kill -TERM $server; wait $server || true
trap - EXIT
if [ -z "${SKIP_PEER:-}" ]; then
  python3 tools/bench/hf_serve_peer.py --model "$model" --concurrency "$c" --requests "$requests" \
    --prompt-len "$plen" --output-len "$olen" >"$out/peer.json" 2>"$out/peer.log" || tail -5 "$out/peer.log"
fi
python3 - "$out" "$c" <<'PY'
import json, os, sys
out, c = sys.argv[1], sys.argv[2]
one = json.load(open(os.path.join(out, "strata-c1.json")))
many = json.load(open(os.path.join(out, f"strata-c{c}.json")))
rows = [("strata, concurrency 1", one), (f"strata, concurrency {c}", many)]
print(f"\n{'run':34s} {'out tok/s':>10s} {'TTFT p50/p99 ms':>18s} {'TPOT p50 ms':>12s} {'latency p50/p99 ms':>20s}")
for name, r in rows:
    print(f"{name:34s} {r['output_tokens_per_s']:10.0f} {r['ttft_ms']['p50']:8.0f}/{r['ttft_ms']['p99']:<8.0f} "
          f"{r['tpot_ms']['p50']:12.2f} {r['latency_ms']['p50']:9.0f}/{r['latency_ms']['p99']:<9.0f}")
print(f"throughput at concurrency {c} over batch-1 rate: {many['output_tokens_per_s'] / one['output_tokens_per_s']:.1f}x")
peer_path = os.path.join(out, "peer.json")
if os.path.exists(peer_path) and os.path.getsize(peer_path) > 0:
    p = json.load(open(peer_path))
    print(f"{'HF static batches of ' + c:34s} {p['output_tokens_per_s']:10.0f} {'':>18s} {'':>12s} "
          f"{p['latency_ms']['p50']:9.0f}/{p['latency_ms']['p99']:<9.0f}")
    print(f"strata over the peer at concurrency {c}: {many['output_tokens_per_s'] / p['output_tokens_per_s']:.1f}x")
PY
