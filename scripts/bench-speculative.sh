#!/usr/bin/env bash
# scripts/bench-speculative.sh: `strata bench decode` without speculation, with prompt lookup
# (--speculative ngram) and with a draft model, on a prompt without repetition and on one that cycles
# through 8 tokens (--repeat-period 8: repetitive text, where prompt lookup finds its drafts). Reports
# the acceptance rate, tokens per decode step and the decode rate of each, all from one build and one
# machine. Writes bench/results/speculative-<host>-<date>.jsonl (one JSON object per run, with its
# command).
# Usage: scripts/bench-speculative.sh [MODEL [DRAFT]]   (default: ../shared/models stories260K, drafting
#        for itself: every draft stands, the upper bound of tokens per step)
#        extra `strata bench decode` flags go in BENCH_FLAGS (e.g. "--device cuda --batch 4")
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
strata="${STRATA:-$root/build/strata}"
model="${1:-$root/../shared/models/stories260K/stories260K.bin}"
draft="${2:-$model}"
mkdir -p bench/results
out="bench/results/speculative-$(hostname)-$(date +%Y%m%d-%H%M%S).jsonl"
: >"$out"
for spec in "" "--speculative ngram --spec-tokens 4" "--draft-model $draft --spec-tokens 4"; do
  for period in 0 8; do
    # shellcheck disable=SC2086  # the flag lists split on purpose
    cmd=("$strata" bench decode --model "$model" --prompt-len 64 -n 128 --repeat-period "$period" --mib 256 $spec
         ${BENCH_FLAGS:-})
    result="$("${cmd[@]}" 2>/dev/null)"
    echo "{\"command\": \"${cmd[*]#$root/}\", \"result\": $result}" >>"$out"
  done
done
python3 - "$out" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)["result"]
    s = d["speculative"]
    print(f"{s['method']:>5} repeat {s['repeat_period']}: {d['decode_tokens_per_s']:8.1f} tok/s, "
          f"{s['tokens_per_step']:.2f} tokens/step, acceptance {100 * s['acceptance_rate']:5.1f}% "
          f"({s['accepted_tokens']} of {s['draft_tokens']}), {s['ms_per_decode_step']:.3f} ms per decode step")
PY
echo "wrote $out"
