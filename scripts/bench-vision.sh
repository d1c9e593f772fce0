#!/usr/bin/env bash
# scripts/bench-vision.sh: the vision-language serving benchmark of issue 24, on one GPU. A LLaVA-1.5-7B-shaped
# model with random bf16 weights (CLIP ViT-L/14-336 + a 7B Llama; tools/bench/make_llava_bench_model.py,
# made when absent, with 336 x 336 test pictures) behind `strata serve --device cuda`; `strata bench serve
# --image` sends chat requests of a ~20-token instruction and one picture (base64 data URL) answered with 32
# greedy tokens, as Poisson arrivals at rising rates, until the P99 latency passes 500 ms twice. Then the
# peer on the same GPU: transformers LlavaForConditionalGeneration.generate in static batches of 1/8/32/64
# (tools/bench/hf_vision_peer.py). Prints a table last: per rate the achieved rate, TTFT and latency
# p50/p95/p99, GPU utilization and memory (nvidia-smi, sampled every 200 ms during the rate); the highest
# rate whose P99 latency stays under 500 ms; the peer's batch latencies and rates.
# JSON results, logs and the command go to OUT.
#
# Env: STRATA_GPU_BUILD (default build-gpu; built with CUDA when absent), MODEL_DIR (default
# /tmp/llava-7b-shape), OUT (default bench/results/vision-gpu-<host>-<date>), RATES (default
# "1 2 4 8 12 16 24 32"), SECONDS_PER_RATE (default 15: requests per rate = rate x this, at least 32),
# OUTPUT_LEN (32), P99_TARGET_MS (500), PEER_BATCHES (1,8,32,64), SKIP_PEER=1, PEER_ONLY=1 (the peer and the
# table only, into an existing OUT: a machine that allows 10 minutes a command runs the strata half and the
# peer half as two commands), PYTHON (default python3: numpy and tokenizers make the model; torch,
# transformers and Pillow run the peer), SERVE_ARGS (extra `strata serve` flags). Prefix caching is off
# (--no-prefix-caching), so no request reuses another's prefill; the 64 test pictures are sent in turn.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
build="${STRATA_GPU_BUILD:-$root/build-gpu}"
model="${MODEL_DIR:-/tmp/llava-7b-shape}"
out="${OUT:-bench/results/vision-gpu-$(hostname)-$(date +%Y%m%d-%H%M%S)}"
rates="${RATES:-1 2 4 8 12 16 24 32}"
per_rate_s="${SECONDS_PER_RATE:-15}" olen="${OUTPUT_LEN:-32}" target="${P99_TARGET_MS:-500}"
peer_batches="${PEER_BATCHES:-1,8,32,64}" py="${PYTHON:-python3}"
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0

# Prerequisites, each with what to do about it.
if ! nvidia-smi -L >"$out/gpu.txt" 2>&1; then
  echo "bench-vision: no GPU visible (nvidia-smi -L failed); run this on a CUDA machine" >&2
  exit 1
fi
command -v curl >/dev/null || { echo "bench-vision: curl is missing (apt-get install curl)" >&2; exit 1; }
"$py" -c 'import numpy, tokenizers' 2>/dev/null || {
  echo "bench-vision: $py lacks numpy or tokenizers (pip install numpy tokenizers), needed to make the model" >&2
  exit 1; }
if [ -z "${PEER_ONLY:-}" ] && [ ! -x "$build/strata" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DBUILD_TESTING=OFF >"$out/configure.log" 2>&1 || { tail -20 "$out/configure.log" >&2; exit 1; }
  # The test pictures are PNG: libjpeg and libpng suffice (GPU nodes often lack libwebp-dev).
  grep -q "image decoding ON" "$out/configure.log" || {
    echo "bench-vision: $build has no image decoding: apt-get install libjpeg62-turbo-dev libpng-dev pkg-config" >&2
    exit 1; }
  cmake --build "$build" -j "$(nproc)" --target strata >"$out/build.log" 2>&1 || {
    tail -20 "$out/build.log" >&2; exit 1; }
fi
if [ ! -f "$model/model.safetensors.index.json" ] || [ ! -d "$model/images" ]; then
  echo "making the LLaVA-1.5-7B-shaped model in $model (about 14 GB)..."
  "$py" tools/bench/make_llava_bench_model.py --out "$model" --images 64 >"$out/make-model.json"
fi
images=$(printf '%s,' "$model"/images/*.png)
images=${images%,}
echo "RATES='$rates' SECONDS_PER_RATE=$per_rate_s OUTPUT_LEN=$olen P99_TARGET_MS=$target MODEL_DIR=$model" \
  "PEER_ONLY=${PEER_ONLY:-} SKIP_PEER=${SKIP_PEER:-} $0" >>"$out/command.txt"

# strata serve under Poisson arrivals at rising rates (skipped with PEER_ONLY).
run_strata() {
  # The server: KV room for ~96 requests of ~640 tokens at once.
  # shellcheck disable=SC2086
  "$build/strata" serve --model "$model" --device cuda --port 0 --kv-tokens $((96 * 704)) --no-prefix-caching \
    ${SERVE_ARGS:-} >"$out/serve.log" 2>&1 &
  server=$!
  trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
  port=""
  for _ in $(seq 1 1500); do
    port=$(sed -n 's/.*listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$out/serve.log" | head -1)
    if [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then break; fi
    if ! kill -0 $server 2>/dev/null; then
      echo "bench-vision: the server exited:" >&2
      tail -20 "$out/serve.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  url="http://127.0.0.1:$port"
  common=(--url "$url" --image "$images" --output-len "$olen" --output-dist fixed)
  # Warm-up (kernels, cuBLAS plans, graphs); its failure says whether the server takes images at all.
  if ! "$build/strata" bench serve "${common[@]}" --concurrency 4 --requests 8 >"$out/warmup.json"; then
    echo "bench-vision: the warm-up requests failed: $(cat "$out/warmup.json")" >&2
    tail -5 "$out/serve.log" >&2
    exit 1
  fi
  over=0
  for rate in $rates; do
    n=$(( rate * per_rate_s > 32 ? rate * per_rate_s : 32 ))
    echo "rate $rate/s: $n requests..."
    curl -sf "$url/metrics" >"$out/metrics-before-$rate.txt" || true
    # GPU utilization (% of time a kernel ran) and memory in use, sampled every 200 ms while the rate runs.
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 \
      >"$out/gpu-rate-$rate.csv" 2>/dev/null &
    sampler=$!
    "$build/strata" bench serve "${common[@]}" --rate "$rate" --requests "$n" --seed "$rate" \
      >"$out/strata-rate-$rate.json" || true
    kill $sampler 2>/dev/null || true
    wait $sampler 2>/dev/null || true
    curl -sf "$url/metrics" >"$out/metrics-after-$rate.txt" || true
    # Missed: a failed request, a P99 latency over the target, or no report at all.
    missed=$("$py" -c 'import json, sys; r = json.load(open(sys.argv[1]))
print(int(r["failed"] > 0 or (r["latency_ms"]["p99"] or 1e9) > float(sys.argv[2])))' \
      "$out/strata-rate-$rate.json" "$target" 2>/dev/null || echo 1)
    if [ "$missed" != 0 ]; then over=$((over + 1)); else over=0; fi
    [ "$over" -ge 2 ] && break
  done
  curl -sf "$url/metrics" >"$out/metrics.txt" || true
  kill -TERM $server
  wait $server || true
  trap - EXIT
}
[ -n "${PEER_ONLY:-}" ] || run_strata

if [ -z "${SKIP_PEER:-}" ]; then
  echo "peer: transformers, static batches of $peer_batches..."
  "$py" tools/bench/hf_vision_peer.py --model "$model" --batches "$peer_batches" --output-len "$olen" \
    >"$out/peer.json" 2>"$out/peer.log" || { echo "the peer failed:"; tail -5 "$out/peer.log"; }
fi

"$py" - "$out" "$target" <<'PY'
import glob, json, os, sys
out, target = sys.argv[1], float(sys.argv[2])
runs = []
for path in glob.glob(os.path.join(out, "strata-rate-*.json")):
    try:
        runs.append(json.load(open(path)))
    except ValueError:
        pass
runs.sort(key=lambda r: r["rate"])


def scrape(path):
    """The engine's counters from a /metrics text (name{labels} -> value)."""
    values = {}
    try:
        for line in open(path):
            if line.startswith("strata_engine_") or line.startswith("strata_batch_size_"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
    except (OSError, ValueError):
        pass
    return values


def step_profile(rate):
    """Where the engine's steps went during one rate: steps/s, mean step, batch, prefill share, phases."""
    a = scrape(os.path.join(out, f"metrics-before-{rate:g}.txt"))
    b = scrape(os.path.join(out, f"metrics-after-{rate:g}.txt"))
    d = {k: b[k] - a.get(k, 0.0) for k in b}
    steps = d.get("strata_engine_steps_total", 0)
    if steps <= 0:
        return None
    pre = d.get('strata_engine_step_seconds_total{kind="prefill"}', 0)
    dec = d.get('strata_engine_step_seconds_total{kind="decode"}', 0)
    dsteps = d.get("strata_engine_decode_steps_total", 0)
    return {"steps": steps, "step_ms": 1e3 * (pre + dec) / steps,
            "decode_step_ms": 1e3 * dec / dsteps if dsteps else None,
            "prefill_step_ms": 1e3 * pre / (steps - dsteps) if steps > dsteps else None,
            "prefill_share": pre / (pre + dec) if pre + dec > 0 else 0,
            "batch": d.get("strata_batch_size_sum", 0) / steps,
            "forward_share": d.get('strata_engine_phase_seconds_total{phase="forward"}', 0) / (pre + dec) if pre + dec else 0,
            "sample_share": d.get('strata_engine_phase_seconds_total{phase="sample"}', 0) / (pre + dec) if pre + dec else 0}
def gpu_use(rate):
    """Mean GPU utilization (%) and the most memory in use (GiB) sampled during one rate."""
    util, mem = [], []
    try:
        for line in open(os.path.join(out, f"gpu-rate-{rate:g}.csv")):
            u, m = (float(v) for v in line.split(",")[:2])
            util.append(u)
            mem.append(m)
    except (OSError, ValueError):
        pass
    return (sum(util) / len(util), max(mem) / 1024) if util else (None, None)
best = None
print(f"\nstrata serve, one GPU, LLaVA-1.5-7B shape, 336x336 images, {runs[0]['output_len_mean'] if runs else '?'}"
      " output tokens, Poisson arrivals")
print(f"{'rate/s':>7s} {'done/s':>7s} {'failed':>6s} {'prompt tok':>10s} {'TTFT p50/p95/p99 ms':>22s} "
      f"{'latency p50/p95/p99 ms':>24s} {'GPU util':>8s} {'mem GiB':>8s}")
for r in runs:
    t, l = r["ttft_ms"], r["latency_ms"]
    fmt = lambda d: "/".join(f"{d[k]:.0f}" if d[k] is not None else "-" for k in ("p50", "p95", "p99"))
    util, mem = gpu_use(r["rate"])
    r["gpu_util_pct"], r["gpu_mem_gib"] = util, mem
    print(f"{r['rate']:7.1f} {r['request_throughput']:7.2f} {r['failed']:6d} {r['prompt_len_mean']:10.0f} "
          f"{fmt(t):>22s} {fmt(l):>24s} {f'{util:.0f}%' if util is not None else '-':>8s} "
          f"{f'{mem:.1f}' if mem is not None else '-':>8s}")
    if r["failed"] == 0 and l["p99"] is not None and l["p99"] < target:
        best = r if best is None or r["rate"] > best["rate"] else best
profiles = {f"{r['rate']:g}": step_profile(r["rate"]) for r in runs}
if any(profiles.values()):
    print(f"\nengine steps per rate: mean step, decode-only and prefill-carrying steps, rows per step, share of time")
    print(f"{'rate/s':>7s} {'steps':>6s} {'step ms':>8s} {'decode ms':>10s} {'prefill ms':>11s} {'rows':>5s} "
          f"{'prefill%':>9s} {'forward%':>9s} {'sample%':>8s}")
    for rate, p in profiles.items():
        if p:
            ms = lambda v: f"{v:.1f}" if v is not None else "-"
            print(f"{float(rate):7.1f} {p['steps']:6.0f} {p['step_ms']:8.1f} {ms(p['decode_step_ms']):>10s} "
                  f"{ms(p['prefill_step_ms']):>11s} {p['batch']:5.1f} {100 * p['prefill_share']:8.0f}% "
                  f"{100 * p['forward_share']:8.0f}% {100 * p['sample_share']:7.0f}%")
summary = {"p99_target_ms": target, "best_rate": best["rate"] if best else None, "runs": runs,
           "step_profiles": profiles}
if best:
    print(f"highest rate with P99 latency < {target:.0f} ms: {best['rate']:g} requests/s "
          f"(TTFT p50 {best['ttft_ms']['p50']:.0f} ms, latency p99 {best['latency_ms']['p99']:.0f} ms)")
else:
    print(f"no rate kept the P99 latency under {target:.0f} ms")
peer_path = os.path.join(out, "peer.json")
if os.path.exists(peer_path) and os.path.getsize(peer_path) > 0:
    p = json.load(open(peer_path))
    summary["peer"] = p
    print(f"\npeer: {p['peer']} ({p['device']}, {p['prompt_tokens']} prompt tokens)")
    print(f"{'batch':>7s} {'TTFT ms':>9s} {'latency ms':>11s} {'requests/s':>11s} {'out tok/s':>10s}")
    for b in p["batches"]:
        if "error" in b:
            print(f"{b['batch']:7d} {b['error']}")
            continue
        print(f"{b['batch']:7d} {b['ttft_ms_p50']:9.0f} {b['latency_ms_p50']:11.0f} {b['requests_per_s']:11.2f} "
              f"{b['output_tokens_per_s']:10.0f}")
    ok = [b for b in p["batches"] if "error" not in b and b["latency_ms_max"] < target]
    if ok:
        top = max(ok, key=lambda b: b["requests_per_s"])
        print(f"peer's best rate with every batch under {target:.0f} ms: {top['requests_per_s']:.2f} requests/s "
              f"(batch {top['batch']}; static batches ignore queueing, so this is an upper bound)")
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
PY
