#!/usr/bin/env bash
# scripts/bench-cpu.sh: CPU decode at batch 1 on the `small` preset (f16 weights), with the weight
# bytes streamed per second against this machine's memory bandwidth measured in the same run
# (STREAM-like copy, and a pure read since decode only reads weights). Writes
# bench/results/cpu-decode-<host>-<date>.json with the command that produced it.
# Usage: scripts/bench-cpu.sh [extra `strata bench decode` flags, e.g. --batch 4]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/scripts/setup.sh"
export CCACHE_DIR="${CCACHE_DIR:-$root/.cache/ccache}"
"$root/scripts/build.sh" "$root/build" >/dev/null
strata="$root/build/strata"
model="$root/models/bench-small-f16"
[ -f "$model/model.safetensors" ] || "$strata" make-model --preset small --dtype f16 --out "$model"

mkdir -p bench/results
out="bench/results/cpu-decode-$(hostname)-$(date +%Y%m%d-%H%M%S).json"
cmd=("$strata" bench decode --model "$model" --batch 1 --prompt-len 16 -n 64 "$@")
result="$("${cmd[@]}")"
{
  echo "{\"command\": \"${cmd[*]#$root/}\", \"cpu\": \"$(lscpu | sed -n 's/^Model name: *//p')\","
  echo " \"cores\": $(nproc), \"result\": $result}"
} >"$out"
cat "$out"
python3 - "$out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["result"]
print(f"decode batch {r['batch']}: {r['decode_tokens_per_s']:.1f} tok/s, {r['weight_gbs']:.1f} GB/s of weights = "
      f"{100*r['of_copy']:.0f}% of the copy bandwidth ({r['copy_gbs']:.1f} GB/s), "
      f"{100*r['of_read']:.0f}% of the read bandwidth ({r['read_gbs']:.1f} GB/s)")
PY
