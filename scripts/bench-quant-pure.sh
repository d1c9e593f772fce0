#!/usr/bin/env bash
# scripts/bench-quant-pure.sh: one GGUF weight type per file, strata against llama.cpp on the CPU, batch-1
# decode and 64-token prefill. bench-quant.sh measures SmolLM2-135M, whose 576-wide matrices do not divide the
# K-quants' 256-element blocks, so most of its "q4_k" file is q5_0 (llama-quantize's fallback, and strata's);
# here every matrix, the head included, is the named type: `strata make-model --format gguf --dtype T` writes a
# random-weight Llama (hidden 1024, ffn 2816, 8 layers, 32000 vocabulary: 156M parameters, 60-170 MB per type,
# larger than the L3, so decode reads DRAM). Random weights are fine for speed: the kernels do not look at
# values.
# Usage: LLAMA_BIN=/path/to/llama.cpp/build/bin scripts/bench-quant-pure.sh
# Environment: TYPES (default "q2_k q3_k q4_k q5_k q6_k iq4_xs iq4_nl"), REPS (3), GEN (32), THREADS (1),
# STRATA_BASE (a second strata binary run in the same alternation: the before column).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
strata="${STRATA:-$root/build/strata}"
llama="${LLAMA_BIN:?set LLAMA_BIN to the folder holding llama-bench}"
types="${TYPES:-q2_k q3_k q4_k q5_k q6_k iq4_xs iq4_nl}"
reps="${REPS:-3}" gen="${GEN:-32}" threads="${THREADS:-1}" base="${STRATA_BASE:-}"
work="${WORK:-$root/models/bench-quant}"
out="bench/results/quant-cpu-pure-$(date +%Y%m%d-%H%M)"
mkdir -p "$out" "$work"
log="$out/log.txt"
{
  echo "command: LLAMA_BIN=$llama TYPES=\"$types\" THREADS=$threads GEN=$gen REPS=$reps${base:+ STRATA_BASE=$base} scripts/bench-quant-pure.sh"
  echo "date: $(date -u +%FT%TZ)  cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, L3 $(lscpu | sed -n 's/^L3 cache: *//p')"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "strata: $(git rev-parse --short HEAD)${base:+  before: $base}  llama.cpp: $("$llama/llama-bench" --version 2>&1 | head -1 || true)"
} | tee "$log"
results="$out/results.jsonl"
: >"$results"
for t in $types; do
  g="$work/pure-$t.gguf"
  [ -f "$g" ] || "$strata" make-model --preset small --format gguf --dtype "$t" --hidden 1024 --ffn 2816 --layers 8 \
    --heads 16 --kv-heads 4 --out "$g" >/dev/null 2>&1
  sj="[" lj="[" bj="["
  for ((k = 0; k < reps; ++k)); do
    sj+="$("$strata" bench decode --model "$g" --threads "$threads" --prompt-len 64 -n "$gen" --mib 256 2>/dev/null | tail -1),"
    lj+="$("$llama/llama-bench" -m "$g" -t "$threads" -p 64 -n "$gen" -r 1 -o json 2>/dev/null || echo '[]'),"
    [ -z "$base" ] ||
      bj+="$("$base" bench decode --model "$g" --threads "$threads" --prompt-len 64 -n "$gen" --mib 256 2>/dev/null | tail -1),"
  done
  python3 tools/bench/quant_row.py "$t" "$threads" "$(stat -c %s "$g")" "${sj%,}]" "${lj%,}]" "${bj%,}]" |
    tee -a "$log" >>"$results"
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$log"
python3 - "$out" <<'PY' | tee "$out/README.md"
import json, os, sys
out = sys.argv[1]
rows = [json.loads(l) for l in open(os.path.join(out, "results.jsonl"))]
log = open(os.path.join(out, "log.txt")).read().splitlines()
print("# One weight type per file (random-weight Llama, 156M parameters), strata vs llama.cpp on the CPU "
      "(scripts/bench-quant-pure.sh)\n")
print("\n".join("    " + l for l in log[:4] + log[-1:]) + "\n")
print("tokens/s: the median of the runs (tools alternating run by run) and their range in brackets. % of read: the "
      "weight bytes a decode step reads times tokens/s, against the median read bandwidth (strata bench memory) of "
      "the same runs.\n")
print("| type | MiB read/token | strata tg | % of read | llama.cpp tg | % of read | tg ratio | before tg | % of read | "
      "strata pp | llama.cpp pp | pp ratio | before pp |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
def cell(r, key):
    return f"{r[key]:.1f} [{r[key + '_min']:.1f}-{r[key + '_max']:.1f}]" if key in r else "-"
def share(r, key):
    return f"{100 * r[key] * r['weight_bytes'] / 1e9 / r['read_gbs']:.0f}%" if key in r else "-"
def ratio(r, a, b):
    return f"{r[a] / r[b]:.2f}" if a in r and b in r else "-"
for r in rows:
    print(f"| {r['type']} | {r['weight_bytes'] / 2**20:.0f} | {cell(r, 'strata_tg')} | {share(r, 'strata_tg')} | "
          f"{cell(r, 'llama_tg')} | {share(r, 'llama_tg')} | {ratio(r, 'strata_tg', 'llama_tg')} | {cell(r, 'base_tg')} | "
          f"{share(r, 'base_tg')} | {cell(r, 'strata_pp')} | {cell(r, 'llama_pp')} | {ratio(r, 'strata_pp', 'llama_pp')} | "
          f"{cell(r, 'base_pp')} |")
print(f"\nread bandwidth (median of the strata runs' own measurement): "
      + ", ".join(f"{r['type']} {r['read_gbs']:.1f} GB/s [{r['read_gbs_min']:.1f}-{r['read_gbs_max']:.1f}]" for r in rows))
PY
echo "wrote $out"
