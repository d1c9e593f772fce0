#!/usr/bin/env bash
# Mixture-of-experts decode and prefill on the CPU, strata against llama.cpp on the same GGUF (issue 25: "CPU:
# the same on the CPU backend"). Qwen3-30B-A3B layer shapes (128 experts, top-8, hidden 2048, expert FFN 768),
# the first 4 layers, a 32000-token vocabulary (so the LM head does not dominate), Q8_0, random weights: 2.56
# GiB, far past the 300 MiB L3, so decode reads DRAM. The tools alternate, REPS rounds.
# usage: STRATA=build/strata LLAMA_BIN=/path/to/llama.cpp/bin [THREADS="1 2"] [REPS=2] run.sh OUTDIR
set -u
out=${1:?output folder}; mkdir -p "$out"
model=${MODEL:-/tmp/moecpu/q3moe-q8_0.gguf}
[ -f "$model" ] || "$STRATA" make-model --preset qwen3-30b-a3b-shape --layers 4 --vocab 32000 --format gguf \
  --dtype q8_0 --out "$model" >"$out/make-model.txt" 2>&1
for t in ${THREADS:-1 2}; do
  for r in $(seq "${REPS:-2}"); do
    "$STRATA" bench decode --model "$model" --threads "$t" --batch 1 --prompt-len 64 -n 32 >"$out/strata-t$t-r$r.json" 2>/dev/null
    LD_LIBRARY_PATH=$LLAMA_BIN "$LLAMA_BIN/llama-bench" -m "$model" -t "$t" -p 64 -n 32 -r 2 -o json \
      >"$out/llama-t$t-r$r.json" 2>/dev/null
  done
done
python3 - "$out" <<'PY'
import glob, json, statistics, sys
out = sys.argv[1]
rows = {}
for f in sorted(glob.glob(out + "/strata-t*-r*.json")):
    t = f.split("-t")[1].split("-")[0]
    r = json.load(open(f))
    rows.setdefault(t, {"s_tg": [], "s_pp": [], "l_tg": [], "l_pp": [], "read": [], "mb": r["weight_bytes_per_step"] / 1e6})
    rows[t]["s_tg"].append(r["decode_tokens_per_s"]); rows[t]["s_pp"].append(r["prefill_tokens_per_s"])
    rows[t]["read"].append(r.get("read_gbs", 0))
for f in sorted(glob.glob(out + "/llama-t*-r*.json")):
    t = f.split("-t")[1].split("-")[0]
    for e in json.load(open(f)):
        (rows[t]["l_pp"] if e["n_prompt"] > 0 else rows[t]["l_tg"]).append(e["avg_ts"])
print("| threads | strata tg | llama.cpp tg | tg ratio | strata pp64 | llama.cpp pp64 | pp ratio | MB read a step | strata % of read |")
print("|---|---|---|---|---|---|---|---|---|")
med = statistics.median
for t, v in sorted(rows.items()):
    print(f"| {t} | {med(v['s_tg']):.1f} | {med(v['l_tg']):.1f} | {med(v['s_tg'])/med(v['l_tg']):.2f} | {med(v['s_pp']):.0f} | "
          f"{med(v['l_pp']):.0f} | {med(v['s_pp'])/med(v['l_pp']):.2f} | {v['mb']:.0f} | {100*med(v['s_tg'])*v['mb']/1e3/med(v['read']):.0f}% |")
PY
