#!/usr/bin/env bash
# scripts/bench-gpu.sh: the GPU benchmark of the CUDA issue, in one call on a GPU machine: builds with
# CUDA (sm_90), makes the 7b-shape model (Llama-2-7B dimensions, random bf16 weights) when absent,
# measures the ceilings (device copy bandwidth, bf16 GEMM rate) and the peer (Hugging Face
# transformers, eager bf16) with tools/bench/hf_peer.py, then strata: decode at batch 1/16/64 and a
# 2048-token prefill. Prints a table last; keeps everything in bench/results/gpu-<host>-<date>/.
# Env: MODEL_DIR (default models/7b-shape), SKIP_PEER=1, BATCHES="1 16 64", OUT (a folder: the results are also
# packed there as bench-gpu.tgz, for a lent machine that hands back only a few files).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export NCCL_NVLS_ENABLE=0
strata="$("$root/scripts/gpu-strata.sh")"
model="${MODEL_DIR:-$root/models/7b-shape}"
[ -f "$model/model.safetensors" ] || "$strata" make-model --preset 7b-shape --dtype bf16 --out "$model"

out="bench/results/gpu-$(hostname)-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
echo "$0 $*" >"$out/command.txt"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv >"$out/gpu.csv" || true

peer_flags=()
[ -n "${SKIP_PEER:-}" ] && peer_flags+=(--skip-peer)
python3 tools/bench/hf_peer.py --model "$model" "${peer_flags[@]}" >"$out/peer.json"

for b in ${BATCHES:-1 16 64}; do
  "$strata" bench decode --model "$model" --device cuda --batch "$b" --prompt-len 16 -n 64 --mib 64 >"$out/decode-b$b.json"
done
"$strata" bench decode --model "$model" --device cuda --batch 1 --prompt-len 2048 -n 2 --mib 64 >"$out/prefill-2048.json"

python3 - "$out" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
peer = json.load(open(os.path.join(out, "peer.json")))
c = peer["ceilings"]
cfg = json.load(open(os.path.join(os.environ.get("MODEL_DIR", "models/7b-shape"), "config.json")))
h, L, f, v = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
params = L * (4 * h * h + 3 * h * f) + v * h  # matmul weights per token (embedding is a lookup)
rows = [("ceiling: device copy bandwidth", f"{c['d2d_copy_gbs']:.0f} GB/s", ""),
        ("ceiling: bf16 GEMM", f"{c['bf16_gemm_tflops']:.0f} TFLOP/s", "")]
pd = peer.get("peer", {}).get("decode", {})
for path in sorted(glob.glob(os.path.join(out, "decode-b*.json")), key=lambda p: int(p.split("-b")[-1][:-5])):
    r = json.load(open(path))
    b = str(r["batch"])
    frac = r["weight_gbs"] / c["d2d_copy_gbs"]
    peer_txt = ""
    if b in pd:
        peer_txt = f"HF {pd[b]['tokens_per_s']:.0f} tok/s ({r['decode_tokens_per_s'] / pd[b]['tokens_per_s']:.1f}x)"
    rows.append((f"strata decode batch {b}", f"{r['decode_tokens_per_s']:.0f} tok/s, {r['ms_per_step']:.2f} ms/step, "
                 f"{r['weight_gbs']:.0f} GB/s = {100 * frac:.0f}% of copy bw", peer_txt))
r = json.load(open(os.path.join(out, "prefill-2048.json")))
tps = r["prefill_tokens_per_s"]
T = r["prompt_len"]
flops = 2 * params * T + 2 * 2 * L * h * T * T / 2  # matmuls + causal attention
tflops = flops / (T / tps) / 1e12
peer_pf = peer.get("peer", {}).get("prefill")
rows.append((f"strata prefill {T}", f"{tps:.0f} tok/s, {tflops:.0f} TFLOP/s = {100 * tflops / c['bf16_gemm_tflops']:.0f}% of GEMM",
             f"HF {peer_pf['tokens_per_s']:.0f} tok/s" if peer_pf else ""))
if "peer" in peer:
    rows.append(("HF peak memory", f"{peer['peer']['peak_memory_gib']:.1f} GiB", ""))
json.dump({"rows": rows}, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(f"\n{peer['gpu']}  ({out})")
for name, val, extra in rows:
    print(f"  {name:34s} {val:60s} {extra}")
PY
if [ -n "${OUT:-}" ]; then tar czf "$OUT/bench-gpu.tgz" "$out"; fi
