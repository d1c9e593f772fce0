#!/usr/bin/env bash
# scripts/bench-moe.sh: the mixture-of-experts benchmark (issue 25) on one GPU. Two layer shapes, random bf16
# weights written by `strata make-model`:
#   - Mixtral-8x7B (preset mixtral-8x7b-shape: 8 experts, top-2, hidden 4096, expert FFN 14336), the first
#     MIXTRAL_LAYERS layers (default 16 of 32: 2.9 GB a layer, 47 GB in all, so the model, its KV cache and
#     the transformers peer's copy fit one 80 GB H100 and its 64 GB disk);
#   - Qwen3-30B-A3B (preset qwen3-30b-a3b-shape: 128 experts, top-8, hidden 2048, expert FFN 768, q/k
#     norms), the first QWEN3_LAYERS layers (default 24 of 48: 1.25 GB a layer, 31 GB in all).
# For each: the ceilings (device copy bandwidth, bf16 GEMM) and the peer (transformers, eager bf16, the same
# checkpoint) by tools/bench/hf_peer.py, then `strata bench decode` at batch 1/16/64 and a 2048-token
# prefill. A decode step reads only the experts its tokens were routed to: weight_bytes_per_step is the
# dense weights plus the expert bytes the decode steps measured (expert_bytes_per_step; batch 1 reads
# top_k / n_experts of expert_bytes_held), divided by the step time against the copy bandwidth.
# Then the expert cache (offload.experts): the same batch-1 decode with EXPERTS_RESIDENT experts per layer
# on the device (default: the model's top-k, the least that runs) and the rest fetched from pinned host
# memory when routed to: tokens/s and expert bytes streamed per token against the resident run above.
# Models are deleted after their runs (the disk holds one at a time) unless KEEP_MODELS=1.
# Env: MIXTRAL_LAYERS, QWEN3_LAYERS, SHAPES ("mixtral qwen3"), BATCHES ("1 16 64"), SKIP_PEER=1, EXPERTS_RESIDENT,
#      SKIP_OFFLOAD=1 (no expert-cache run), KERNEL_OPTIONS (strata's --kernel-options for every run),
#      BASELINE_OPTIONS (each decode and prefill run again with these --kernel-options, e.g. moe_grouped=0 for
#      the per-expert matmuls, reported beside it), RESULTS (the results folder; default
#      bench/results/moe-<host>-<time>), MODELS (default models/), OUT (a folder: the results are also packed
#      there as bench-moe.tgz).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export NCCL_NVLS_ENABLE=0
strata="$("$root/scripts/gpu-strata.sh")"
models="${MODELS:-$root/models}"

out="${RESULTS:-bench/results/moe-$(hostname)-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
echo "$0 $* MIXTRAL_LAYERS=${MIXTRAL_LAYERS:-16} QWEN3_LAYERS=${QWEN3_LAYERS:-24} KERNEL_OPTIONS=${KERNEL_OPTIONS:-}" \
  "BASELINE_OPTIONS=${BASELINE_OPTIONS:-}" >"$out/command.txt"
kopts=()
[ -n "${KERNEL_OPTIONS:-}" ] && kopts=(--kernel-options "$KERNEL_OPTIONS")
# bench_pair NAME ARGS...: strata bench decode into $out/NAME.json, and with BASELINE_OPTIONS into NAME-base.json.
bench_pair() {
  local name="$1"
  shift
  "$strata" bench decode --model "$model" --device cuda "$@" --mib 64 "${kopts[@]}" >"$out/$name.json"
  if [ -n "${BASELINE_OPTIONS:-}" ]; then
    "$strata" bench decode --model "$model" --device cuda "$@" --mib 64 --kernel-options "$BASELINE_OPTIONS" \
      >"$out/$name-base.json"
  fi
}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv >"$out/gpu.csv" || true

for shape in ${SHAPES:-mixtral qwen3}; do
  case "$shape" in
    mixtral) preset=mixtral-8x7b-shape layers="${MIXTRAL_LAYERS:-16}" top_k=2 ;;
    qwen3) preset=qwen3-30b-a3b-shape layers="${QWEN3_LAYERS:-24}" top_k=8 ;;
    *) echo "unknown shape '$shape' (mixtral, qwen3)" >&2; exit 2 ;;
  esac
  model="$models/$preset-L$layers"
  [ -f "$model/model.safetensors" ] ||
    "$strata" make-model --preset "$preset" --layers "$layers" --dtype bf16 --out "$model" >"$out/$shape-make-model.txt"
  peer_flags=()
  [ -n "${SKIP_PEER:-}" ] && peer_flags+=(--skip-peer)
  python3 tools/bench/hf_peer.py --model "$model" "${peer_flags[@]}" >"$out/$shape-peer.json"
  for b in ${BATCHES:-1 16 64}; do
    bench_pair "$shape-decode-b$b" --batch "$b" --prompt-len 16 -n 32
  done
  bench_pair "$shape-prefill-2048" --batch 1 --prompt-len 2048 -n 2
  if [ -z "${SKIP_OFFLOAD:-}" ]; then
    "$strata" bench decode --model "$model" --device cuda --batch 1 --prompt-len 16 -n 32 --mib 64 "${kopts[@]}" \
      --experts-resident "${EXPERTS_RESIDENT:-$top_k}" >"$out/$shape-offload-b1.json"
  fi
  echo "{\"shape\": \"$shape\", \"preset\": \"$preset\", \"layers\": $layers}" >"$out/$shape-model.json"
  [ -n "${KEEP_MODELS:-}" ] || rm -rf "$model"
done

python3 - "$out" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
rows = []
for spec_path in sorted(glob.glob(os.path.join(out, "*-model.json"))):
    spec = json.load(open(spec_path))
    shape = spec["shape"]
    peer = json.load(open(os.path.join(out, f"{shape}-peer.json")))
    c = peer["ceilings"]
    rows.append((f"{shape}: {spec['preset']}, {spec['layers']} layers", f"{peer['gpu']}", ""))
    rows.append(("  ceiling: device copy bandwidth", f"{c['d2d_copy_gbs']:.0f} GB/s", ""))
    pd = peer.get("peer", {}).get("decode", {})
    for path in sorted(glob.glob(os.path.join(out, f"{shape}-decode-b*[0-9].json")),
                       key=lambda p: int(p.split("-b")[-1][:-5])):
        r = json.load(open(path))
        base_path = path[:-5] + "-base.json"
        b = str(r["batch"])
        read = r["weight_bytes_per_step"]
        held = r["expert_bytes_held"]
        peer_txt = ""
        if b in pd:
            peer_txt = f"HF {pd[b]['tokens_per_s']:.0f} tok/s ({r['decode_tokens_per_s'] / pd[b]['tokens_per_s']:.1f}x)"
        if os.path.exists(base_path):
            rb = json.load(open(base_path))
            peer_txt += (f" baseline {rb['decode_tokens_per_s']:.0f} tok/s "
                         f"({r['decode_tokens_per_s'] / rb['decode_tokens_per_s']:.2f}x)")
        rows.append((f"  strata decode batch {b}",
                     f"{r['decode_tokens_per_s']:.0f} tok/s, {r['ms_per_step']:.2f} ms/step, reads {read / 1e9:.2f} GB/step "
                     f"(experts {r['expert_bytes_per_step'] / 1e9:.2f} of {held / 1e9:.2f} GB), {r['weight_gbs']:.0f} GB/s = "
                     f"{100 * r['weight_gbs'] / c['d2d_copy_gbs']:.0f}% of copy bw", peer_txt))
    off_path = os.path.join(out, f"{shape}-offload-b1.json")
    if os.path.exists(off_path):
        r = json.load(open(off_path))
        ec = r["expert_cache"] or {}
        base = json.load(open(os.path.join(out, f"{shape}-decode-b1.json")))
        rows.append((f"  experts cached ({ec.get('resident_per_layer')} of {ec.get('experts_per_layer')} per layer), batch 1",
                     f"{r['decode_tokens_per_s']:.0f} tok/s ({r['decode_tokens_per_s'] / base['decode_tokens_per_s']:.2f}x resident), "
                     f"streams {ec.get('bytes_streamed_per_token', 0) / 1e9:.3f} GB/token at {ec.get('stream_gbs', 0):.1f} GB/s, "
                     f"hit rate {100 * ec.get('hit_rate', 0):.0f}%", ""))
    r = json.load(open(os.path.join(out, f"{shape}-prefill-2048.json")))
    peer_pf = peer.get("peer", {}).get("prefill")
    extra = f"HF {peer_pf['tokens_per_s']:.0f} tok/s" if peer_pf else ""
    base_path = os.path.join(out, f"{shape}-prefill-2048-base.json")
    if os.path.exists(base_path):
        rb = json.load(open(base_path))
        extra += (f" baseline {rb['prefill_tokens_per_s']:.0f} tok/s "
                  f"({r['prefill_tokens_per_s'] / rb['prefill_tokens_per_s']:.2f}x)")
    rows.append((f"  strata prefill {r['prompt_len']}", f"{r['prefill_tokens_per_s']:.0f} tok/s", extra))
json.dump({"rows": rows}, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(f"\n({out})")
for name, val, extra in rows:
    print(f"{name:36s} {val:100s} {extra}")
PY
if [ -n "${OUT:-}" ]; then tar czf "$OUT/bench-moe.tgz" "$out"; fi
