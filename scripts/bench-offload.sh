#!/usr/bin/env bash
# scripts/bench-offload.sh: the offload issue's benchmark on a GPU machine. 7b-shape model (Llama-2-7B
# dimensions, random bf16 weights, 12.6 GiB) under a 6 GiB GPU budget, so most weights stream:
#   ceilings  pinned host-to-device copy rate (cudaMemcpyAsync from cudaHostAlloc memory, 1 GiB) and
#             the disk's sequential read rate of the checkpoint file (`strata bench disk`: O_DIRECT with 1/4/16
#             reads in flight, best; dd iflag=direct, one read in flight, is kept beside it)
#   strata    `strata bench decode` at batch 1/16/64, host tier and disk tier (O_DIRECT), with the
#             offload report (bytes streamed, time compute waited on the stream)
#   peer      Hugging Face transformers + accelerate, device_map="auto", max_memory {0: 6GiB}
# Results: bench/results/offload-<host>-<date>/ (one JSON per run, summary.json, a table on stdout) and
# bench/results/offload-ceilings.json (for `strata plan --check --ceilings`).
# Phases, so each call fits a 10-minute limit: scripts/bench-offload.sh [build|model|ceilings|host|disk|peer|summary|all]...
# (default: all). Env: WORK (build + model, default /tmp/strata-bench-offload; keep it between phases),
# OUT (results dir; default a new one, or the latest for later phases), BATCHES ("1 16 64"), BUDGET (6GiB),
# N (tokens per sequence, host tier 32, disk tier 8), PEER_N (16), SKIP_PEER=1.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
work="${WORK:-/tmp/strata-bench-offload}"
build="$work/build"
model="$work/7b-shape"
strata="$build/strata"
budget="${BUDGET:-6GiB}"
batches="${BATCHES:-1 16 64}"
# The KV cache of the largest batch (64 x (16 prompt + 32 new + 16 spare) = 4096 tokens, 2 GiB in bf16)
# is reserved inside the budget for every batch size, so the placement is the same in every run.
kv_tokens=4096
mkdir -p "$work" bench/results
if [ -n "${OUT:-}" ]; then out="$OUT"
elif [ "${1:-all}" = all ] || [ "${1:-all}" = build ]; then out="bench/results/offload-$(hostname)-$(date +%Y%m%d-%H%M%S)"
else out="$(ls -d bench/results/offload-*/ 2>/dev/null | sort | tail -1)"; out="${out%/}"; fi
[ -n "$out" ] || out="bench/results/offload-$(hostname)-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"

phase_build() {
  if [ ! -f "$build/build.ninja" ]; then
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
      -DBUILD_TESTING=OFF >"$work/configure.log" 2>&1 || { cat "$work/configure.log"; exit 1; }
  fi
  cmake --build "$build" -j "$(nproc)" --target strata >"$work/build.log" 2>&1 || { tail -50 "$work/build.log"; exit 1; }
  # The H2D ceiling: a dozen lines of CUDA, built here so the measurement needs nothing else.
  cat >"$work/h2d_bw.cu" <<'CU'
#include <cuda_runtime.h>
#include <cstdio>
int main() {
  const size_t bytes = size_t(1) << 30;
  void *h = nullptr, *d = nullptr;
  cudaStream_t s; cudaEvent_t a, b;
  if (cudaHostAlloc(&h, bytes, cudaHostAllocDefault) || cudaMalloc(&d, bytes)) { printf("{\"error\": \"alloc\"}\n"); return 1; }
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking); cudaEventCreate(&a); cudaEventCreate(&b);
  float best = 1e30f;
  for (int r = 0; r < 6; ++r) {
    cudaEventRecord(a, s);
    cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, s);
    cudaEventRecord(b, s); cudaEventSynchronize(b);
    float ms = 0; cudaEventElapsedTime(&ms, a, b); if (r > 0 && ms < best) best = ms;
  }
  printf("{\"h2d_gbs\": %.2f, \"bytes\": %zu}\n", bytes / (best * 1e-3) / 1e9, bytes);
  return 0;
}
CU
  nvcc -O2 -o "$work/h2d_bw" "$work/h2d_bw.cu"
}

phase_model() {
  [ -f "$model/model.safetensors" ] || "$strata" make-model --preset 7b-shape --dtype bf16 --out "$model" >/dev/null
  ls -l "$model" >"$out/model.txt"
}

phase_ceilings() {
  nvidia-smi --query-gpu=name,memory.total,pcie.link.gen.max,pcie.link.width.max --format=csv >"$out/gpu.csv" 2>&1 || true
  "$work/h2d_bw" >"$out/h2d.json"
  # Sequential read rate of the checkpoint's own disk, bypassing the page cache like the disk tier does.
  local f="$model/model.safetensors" t0 t1 bytes
  bytes=$(stat -c %s "$f")
  t0=$(date +%s.%N)
  dd if="$f" of=/dev/null bs=64M iflag=direct status=none
  t1=$(date +%s.%N)
  # dd keeps one read in flight; the disk tier keeps several, so its ceiling is measured the same way.
  "$strata" bench disk --file "$f" --threads 1,4,16 >"$out/disk.json"
  python3 - "$out" "$bytes" "$t0" "$t1" "$(df -T "$f" | tail -1 | awk '{print $1" "$2}')" <<'PY'
import json, sys, os
out, size, t0, t1, fs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
h2d = json.load(open(os.path.join(out, "h2d.json")))
disk = json.load(open(os.path.join(out, "disk.json")))
c = {"h2d_gbs": h2d["h2d_gbs"], "disk_gbs": disk["best_gbs"], "disk_dd_gbs": round(size / (t1 - t0) / 1e9, 3),
     "disk_bytes_read": size, "disk": fs, "disk_runs": disk["runs"],
     "method": {"h2d": "cudaMemcpyAsync 1 GiB from cudaHostAlloc memory, best of 5",
                "disk": "strata bench disk: O_DIRECT 8 MiB reads of the checkpoint, 1/4/16 in flight, best",
                "disk_dd": "dd bs=64M iflag=direct of the checkpoint file (one read in flight)"}}
json.dump(c, open(os.path.join(out, "ceilings.json"), "w"), indent=1)
json.dump(c, open("bench/results/offload-ceilings.json", "w"), indent=1)
print(json.dumps(c))
PY
}

# strata at each batch size on one tier; --kv-tokens sizes the KV cache and its reserve in the budget.
run_strata() {
  local tier="$1" n="$2" extra=()
  [ "$tier" = disk ] && extra+=(--disk-io direct)
  for b in $batches; do
    "$strata" bench decode --model "$model" --device cuda --batch "$b" --prompt-len 16 -n "$n" --mib 64 \
      --kv-tokens "$kv_tokens" --device-budget "$budget" --cold-tier "$tier" "${extra[@]}" \
      --offload-report "$out/strata-$tier-b$b.offload.json" >"$out/strata-$tier-b$b.json" 2>"$out/strata-$tier-b$b.log" ||
      { tail -5 "$out/strata-$tier-b$b.log"; return 1; }
  done
}

phase_peer() {
  [ -n "${SKIP_PEER:-}" ] && { echo '{"skipped": true}' >"$out/peer.json"; return; }
  python3 - "$model" "$budget" "${PEER_N:-16}" "$batches" >"$out/peer.json" <<'PY' || echo '{"error": "peer failed; see peer.log"}' >"$out/peer.json"
import json, sys, time
model, budget, n, batches = sys.argv[1], sys.argv[2], int(sys.argv[3]), [int(b) for b in sys.argv[4].split()]
try:
    import torch, transformers, accelerate
    from transformers import AutoModelForCausalLM
except Exception as e:  # the peer is optional; say why it is missing
    print(json.dumps({"error": f"transformers/accelerate unavailable: {e}"})); sys.exit(0)
gib = budget  # accelerate reads "6GiB" itself
m = AutoModelForCausalLM.from_pretrained(model, torch_dtype=torch.bfloat16, device_map="auto",
                                         max_memory={0: gib, "cpu": "200GiB"})
res = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                    "accelerate": accelerate.__version__},
       "max_memory": {"0": gib}, "device_map_counts": {}, "decode": {}}
for dev in m.hf_device_map.values():
    res["device_map_counts"][str(dev)] = res["device_map_counts"].get(str(dev), 0) + 1
for b in batches:
    ids = torch.randint(3, 31000, (b, 16), device="cuda:0")
    def run(k):
        torch.cuda.synchronize(); t = time.perf_counter()
        with torch.no_grad():
            m.generate(ids, max_new_tokens=k, min_new_tokens=k, do_sample=False, pad_token_id=0)
        torch.cuda.synchronize(); return time.perf_counter() - t
    run(2)  # warm-up
    t1, tn = run(1), run(n)
    res["decode"][str(b)] = {"tokens_per_s": b * (n - 1) / (tn - t1), "ms_per_step": 1e3 * (tn - t1) / (n - 1), "n": n}
res["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
print(json.dumps(res))
PY
}

phase_summary() {
  python3 - "$out" "$batches" <<'PY'
import json, os, sys
out, batches = sys.argv[1], sys.argv[2].split()
c = json.load(open(os.path.join(out, "ceilings.json")))
peer = json.load(open(os.path.join(out, "peer.json"))) if os.path.exists(os.path.join(out, "peer.json")) else {}
rows, runs = [], {}
rows.append(("ceiling: pinned H2D", f"{c['h2d_gbs']:.1f} GB/s", ""))
rows.append(("ceiling: disk sequential (O_DIRECT)", f"{c['disk_gbs']:.2f} GB/s",
             c.get("disk", "") + (f", dd (one read in flight) {c['disk_dd_gbs']:.2f} GB/s" if "disk_dd_gbs" in c else "")))
for tier in ("host", "disk"):
    ceiling = c["h2d_gbs"] if tier == "host" else min(c["disk_gbs"], c["h2d_gbs"])
    for b in batches:
        p = os.path.join(out, f"strata-{tier}-b{b}.json")
        if not os.path.exists(p): continue
        r, o = json.load(open(p)), json.load(open(os.path.join(out, f"strata-{tier}-b{b}.offload.json")))
        step_s = r["ms_per_step"] / 1e3
        streamed = o["host_bytes_per_pass"] + o["disk_bytes_per_pass"]
        gbs = streamed / step_s / 1e9
        run = {"tokens_per_s": r["decode_tokens_per_s"], "ms_per_step": r["ms_per_step"], "streamed_bytes_per_step": streamed,
               "streamed_gbs": gbs, "of_ceiling": gbs / ceiling, "stream_ms_per_token": r["ms_per_step"] / int(b),
               "strategy": o["strategy"], "resident_bytes": o["resident_bytes"], "pool_peak": o["pool_peak"],
               "acquire_wait_s": o["acquire_wait_s"], "direct_io": o["direct_io"]}
        runs[f"{tier}-b{b}"] = run
        peer_txt = ""
        pd = peer.get("decode", {}).get(b) if tier == "host" else None
        if pd: peer_txt = f"HF accelerate {pd['tokens_per_s']:.2f} tok/s ({r['decode_tokens_per_s'] / pd['tokens_per_s']:.1f}x)"
        rows.append((f"strata {tier} tier batch {b}", f"{r['decode_tokens_per_s']:.2f} tok/s, {r['ms_per_step']:.0f} ms/step, "
                     f"streamed {gbs:.1f} GB/s = {100 * gbs / ceiling:.0f}% of ceiling", peer_txt))
targets = {}
if "host-b1" in runs: targets["host_b1_of_h2d >= 0.85"] = runs["host-b1"]["of_ceiling"]
if "disk-b1" in runs: targets["disk_b1_of_disk >= 0.80"] = runs["disk-b1"]["of_ceiling"]
for tier in ("host", "disk"):
    if f"{tier}-b1" in runs and f"{tier}-b64" in runs:
        targets[f"{tier}_stream_cost_per_token_b1_over_b64 >= 30"] = (runs[f"{tier}-b1"]["stream_ms_per_token"] /
                                                                     runs[f"{tier}-b64"]["stream_ms_per_token"])
summary = {"ceilings": c, "budget": os.environ.get("BUDGET", "6GiB"), "runs": runs, "peer": peer, "targets": targets, "rows": rows}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(f"\n({out})")
for name, val, extra in rows: print(f"  {name:38s} {val:70s} {extra}")
for k, v in targets.items(): print(f"  target {k}: {v:.2f}")
PY
}

phases=("$@")
[ ${#phases[@]} -eq 0 ] && phases=(all)
for p in "${phases[@]}"; do
  case "$p" in
    build) phase_build ;;
    model) phase_model ;;
    ceilings) phase_ceilings ;;
    host) run_strata host "${N:-32}" ;;
    disk) run_strata disk "${N:-8}" ;;
    peer) phase_peer 2>"$out/peer.log" ;;
    summary) phase_summary ;;
    all) phase_build; phase_model; phase_ceilings; run_strata host "${N:-32}"; run_strata disk "${N:-8}"
         phase_peer 2>"$out/peer.log"; phase_summary ;;
    *) echo "unknown phase '$p'; use build, model, ceilings, host, disk, peer, summary or all" >&2; exit 2 ;;
  esac
done
echo "$0 ${phases[*]} -> $out" >>"$out/command.txt"
