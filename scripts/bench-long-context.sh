#!/usr/bin/env bash
# scripts/bench-long-context.sh: long contexts on one GPU (issue 28). A Llama-3.1-8B-shaped model (random bf16
# weights, GQA 32 query / 8 KV heads, context 131072) decodes after prompts of CONTEXTS tokens, with the KV
# cache in bf16 and in fp8 (e4m3, a scale per token and head): per context and KV type,
#   - chunked prefill throughput (tokens/s of the whole prompt, the engine's 2048-token steps),
#   - decode tokens/s and the step against its roofline: (weight bytes + KV bytes read) / copy bandwidth,
#   - the decode attention kernel alone (`--profile-ops`, graphs off): its GPU time per call against the KV
#     bytes one layer reads, as a share of the copy bandwidth measured in the same run.
# The copy bandwidth is the device-to-device copy rate tools/bench/hf_peer.py measures (torch) in the same run.
# Env: CONTEXTS ("8192 16384 32768"), KV_DTYPES ("bf16 fp8"), DECODE_TOKENS (64), MODEL_DIR
# (/tmp/llama3-8b-shape-long; made when absent, 16 GB), STRATA_GPU_BUILD, OUT (a folder for the results).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export NCCL_NVLS_ENABLE=0
strata="$("$root/scripts/gpu-strata.sh")"
model="${MODEL_DIR:-/tmp/llama3-8b-shape-long}"
contexts="${CONTEXTS:-8192 16384 32768}"
kv_dtypes="${KV_DTYPES:-bf16 fp8}"
n="${DECODE_TOKENS:-64}"
out="${OUT:-bench/results/long-context-$(hostname)-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
echo "CONTEXTS='$contexts' KV_DTYPES='$kv_dtypes' DECODE_TOKENS=$n MODEL_DIR=$model $0" >"$out/command.txt"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >"$out/gpu.txt" 2>&1 || true
[ -f "$model/model.safetensors" ] || [ -f "$model/model.safetensors.index.json" ] ||
  "$strata" make-model --preset llama3-8b-shape --context 131072 --dtype bf16 --out "$model" >"$out/make-model.txt"
python3 tools/bench/hf_peer.py --model "$model" --skip-peer >"$out/ceilings.json" 2>"$out/ceilings.log" ||
  { echo "bench-long-context: the copy bandwidth could not be measured (needs torch):"; tail -3 "$out/ceilings.log"; }
for ctx in $contexts; do
  for kv in $kv_dtypes; do
    echo "context $ctx, KV $kv..."
    "$strata" bench decode --model "$model" --device cuda --batch 1 --prompt-len "$ctx" -n "$n" --mib 1024 \
      --kv-cache-dtype "$kv" >"$out/decode-$ctx-$kv.json" 2>"$out/decode-$ctx-$kv.log" || tail -3 "$out/decode-$ctx-$kv.log"
    "$strata" bench decode --model "$model" --device cuda --batch 1 --prompt-len "$ctx" -n 16 --mib 64 \
      --kv-cache-dtype "$kv" --profile-ops >"$out/profile-$ctx-$kv.json" 2>"$out/profile-$ctx-$kv.txt" ||
      tail -3 "$out/profile-$ctx-$kv.txt"
  done
done

python3 - "$out" "$model" <<'PY'
import glob, json, os, re, sys
out, model = sys.argv[1], sys.argv[2]
try:
    copy_gbs = json.load(open(os.path.join(out, "ceilings.json")))["ceilings"]["d2d_copy_gbs"]
except (OSError, ValueError, KeyError):
    copy_gbs = None  # no torch: the shares are left out
cfg = json.load(open(os.path.join(model, "config.json")))
layers, kv_heads = cfg["num_hidden_layers"], cfg["num_key_value_heads"]
head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
def row_bytes(kv):  # one token, one KV head, K or V
    return head_dim * 2 if kv == "bf16" else head_dim + 4  # fp8: codes + the row's f32 scale
def attention_us(path):
    """Mean GPU time of one decode attention call (all layers' calls alike) from an op profile."""
    best = None
    for line in open(path):
        # "rope_kv_attention" is the decode attention with RoPE and the KV write fused in (bf16 caches).
        m = re.match(r"\s+(attention decode[^\d]*?|rope_kv_attention)\s+(\d+)\s+([\d.]+)\s+([\d.]+)", line)
        if m and (best is None or int(m.group(2)) > best[0]):
            best = (int(m.group(2)), float(m.group(4)))
    return best[1] if best else None
rows = []
print(f"\nlong context, batch 1, {cfg.get('_name_or_path', os.path.basename(model))}: {layers} layers, {kv_heads} KV heads x {head_dim}")
print(f"{'context':>8s} {'KV':>5s} {'prefill tok/s':>14s} {'decode tok/s':>13s} {'ms/step':>8s} {'KV GB/step':>11s} "
      f"{'(w+KV)/copy':>12s} {'attn us/layer':>14s} {'attn KV GB/s':>13s} {'of copy':>8s}")
for path in sorted(glob.glob(os.path.join(out, "decode-*.json")), key=lambda p: (int(p.split("-")[-2]), p)):
    ctx, kv = os.path.basename(path)[len("decode-"):-len(".json")].split("-")
    try:
        r = json.loads(open(path).read().strip().splitlines()[-1])
    except (ValueError, IndexError):
        continue
    mean_ctx = int(ctx) + r["output_len"] / 2  # the context grows during the decode
    kv_layer = mean_ctx * kv_heads * 2 * row_bytes(kv)
    kv_step = kv_layer * layers
    step_s = r["ms_per_step"] / 1e3
    roof = (r["weight_bytes_per_step"] + kv_step) / step_s / 1e9
    us = None
    prof = os.path.join(out, f"profile-{ctx}-{kv}.txt")
    if os.path.exists(prof):
        us = attention_us(prof)
    attn_gbs = (int(ctx) + 8) * kv_heads * 2 * row_bytes(kv) / (us * 1e-6) / 1e9 if us else None
    row = {"context": int(ctx), "kv": kv, "prefill_tokens_per_s": r["prefill_tokens_per_s"],
           "decode_tokens_per_s": r["decode_tokens_per_s"], "ms_per_step": r["ms_per_step"],
           "kv_bytes_per_step": kv_step, "weight_bytes_per_step": r["weight_bytes_per_step"],
           "bytes_over_step_gbs": roof, "copy_gbs": copy_gbs, "attention_us_per_layer": us,
           "attention_kv_gbs": attn_gbs}
    rows.append(row)
    f = lambda v, fmt: format(v, fmt) if v is not None else "-"
    share = "%7.0f%%" % (100 * attn_gbs / copy_gbs) if attn_gbs and copy_gbs else "-"
    of_copy = "%11.0f%%" % (100 * roof / copy_gbs) if copy_gbs else "-"
    print(f"{ctx:>8s} {kv:>5s} {r['prefill_tokens_per_s']:14.0f} {r['decode_tokens_per_s']:13.1f} {r['ms_per_step']:8.2f} "
          f"{kv_step / 1e9:11.2f} {of_copy:>12s} {f(us, '14.1f')} {f(attn_gbs, '13.0f')} "
          f"{share:>8s}")
json.dump({"rows": rows}, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(f"({out}; device copy bandwidth {f(copy_gbs, '.0f')} GB/s, measured in this run)")
PY
