#!/usr/bin/env bash
# tests/gpu/decode_sweep.sh: A/B of `strata bench decode` under kernel options on one build and one model,
# for the CUDA backend's kernel forms (`strata bench decode --help` lists the keys of --kernel-options).
# VARIANTS is a |-separated list of --kernel-options values "key=value,..." ("default" = none); each runs at
# every batch in BATCHES. Keeps each run's JSON and prints tokens/s and weight GB/s per cell with their share of the
# device copy bandwidth, measured first (tools/bench/hf_peer.py --skip-peer, kept as ceilings.json) unless
# COPY_GBS gives one measured in the same session (e.g. by kernel_bench).
# Usage: STRATA=build-gpu/strata MODEL_DIR=/tmp/7b-shape VARIANTS="default|gemv_rolling=1,decode_head_split=2" \
#        BATCHES="1 64" [COPY_GBS=4254] [PRESET=llama3-8b-shape] tests/gpu/decode_sweep.sh
# (PRESET: the make-model preset when MODEL_DIR holds no model yet, 7b-shape by default; PROMPT_LEN: the
# prompt each sequence starts from, 16 by default.)
set -euo pipefail
cd "$(dirname "$0")/../.."
strata=${STRATA:-build-gpu/strata}
model=${MODEL_DIR:-models/7b-shape}
[ -f "$model/model.safetensors" ] || "$strata" make-model --preset "${PRESET:-7b-shape}" --dtype bf16 --out "$model" >/dev/null
out="bench/results/decode-sweep-$(hostname)-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
echo "VARIANTS='${VARIANTS:-default}' BATCHES='${BATCHES:-1}' COPY_GBS='${COPY_GBS:-}' PRESET='${PRESET:-}' PROMPT_LEN='${PROMPT_LEN:-16}' $0" >"$out/command.txt"
copy_gbs=${COPY_GBS:-}
if [ -z "$copy_gbs" ]; then
  python3 tools/bench/hf_peer.py --model "$model" --skip-peer >"$out/ceilings.json"
  copy_gbs=$(python3 -c 'import json, sys; print(round(json.load(open(sys.argv[1]))["ceilings"]["d2d_copy_gbs"]))' \
    "$out/ceilings.json")
  echo "device copy bandwidth: $copy_gbs GB/s (ceilings.json)" | tee "$out/table.txt"
fi
IFS='|' read -r -a variants <<<"${VARIANTS:-default}"
# gpu ms: device time of a recorded step (forward and LM head, events around the graph replay); the rest
# of ms/step is sampling and the host between steps.
printf '%-44s %6s %10s %9s %8s %9s %8s\n' variant batch tok/s ms/step "itl p50" GB/s "gpu ms" | tee -a "$out/table.txt"
for v in "${variants[@]}"; do
  options=()
  [ "$v" != default ] && options=(--kernel-options "$v")
  tag=$(echo "$v" | tr -c 'A-Za-z0-9\n' '_')  # file names without '=' (a lent machine drops those)
  for b in ${BATCHES:-1}; do
    "$strata" bench decode --model "$model" --device cuda --batch "$b" --prompt-len "${PROMPT_LEN:-16}" -n 64 \
      --mib 64 "${options[@]}" >"$out/$tag-b$b.json"
    python3 - "$out/$tag-b$b.json" "$v" "$copy_gbs" <<'PY' | tee -a "$out/table.txt"
import json, sys
r = json.load(open(sys.argv[1]))
copy = float(sys.argv[3])
share = f" {100 * r['weight_gbs'] / copy:5.1f}% of copy"
gpu = f"{r['graph_gpu_ms']:8.3f}" if r.get('graph_replays') else f"{'-':>8s}"
print(f"{sys.argv[2]:44s} {r['batch']:6d} {r['decode_tokens_per_s']:10.1f} {r['ms_per_step']:9.3f} {r['itl_ms']['p50']:8.3f} {r['weight_gbs']:9.0f} {gpu}{share}")
PY
  done
done
