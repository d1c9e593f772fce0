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
"$root/scripts/build.sh" "$root/build" -DSTRATA_NATIVE=ON >/dev/null
strata="$root/build/strata"
model="$root/models/bench-small-f16"
[ -f "$model/model.safetensors" ] || "$strata" make-model --preset small --dtype f16 --out "$model"

mkdir -p bench/results
out="bench/results/cpu-decode-$(hostname)-$(date +%Y%m%d-%H%M%S).json"
# One thread and every core: on small VMs the OpenMP fork/join per matmul can cost more than the
# second core's bandwidth brings, so both are measured and kept. Threads stay on their cores.
export OMP_PROC_BIND=close
cmd=("$strata" bench decode --model "$model" --batch 1 --prompt-len 16 -n 64 "$@")
one="$(OMP_NUM_THREADS=1 "${cmd[@]}")"
all="$(OMP_NUM_THREADS=$(nproc) "${cmd[@]}")"
{
  echo "{\"command\": \"OMP_PROC_BIND=close OMP_NUM_THREADS=1|$(nproc) ${cmd[*]#$root/}\","
  echo " \"cpu\": \"$(lscpu | sed -n 's/^Model name: *//p')\", \"cores\": $(nproc),"
  echo " \"threads_1\": $one,"
  echo " \"threads_all\": $all}"
} >"$out"
cat "$out"
python3 - "$out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for key in ("threads_1", "threads_all"):
    r = d[key]
    print(f"decode batch {r['batch']}, {r['threads']} thread(s): {r['decode_tokens_per_s']:.1f} tok/s, "
          f"{r['weight_gbs']:.1f} GB/s of weights = {100*r['of_copy']:.0f}% of the copy bandwidth ({r['copy_gbs']:.1f} GB/s), "
          f"{100*r['of_read']:.0f}% of the read bandwidth ({r['read_gbs']:.1f} GB/s); step p50 {r['itl_ms']['p50']:.2f} ms")
PY
