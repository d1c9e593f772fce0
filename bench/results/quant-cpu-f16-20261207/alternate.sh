#!/bin/bash
# Usage: BEFORE=old/strata AFTER=new/strata LLAMA_BIN=llama.cpp/build/bin REPS=3 alternate.sh (from the repo root)
# alternate: strata before, strata after, llama-bench; f16 SmolLM2, 1 thread, pp64 tg32
m=${MODEL:-models/bench-quant/smollm2-f16.gguf}
for r in $(seq 1 ${REPS:-3}); do
  for b in $BEFORE $AFTER; do
    echo "$b $($b bench decode --model $m --threads 1 --batch 1 --prompt-len 64 -n 32 --mib 256 2>/dev/null | tail -1)"
  done
  echo "llama $($LLAMA_BIN/llama-bench -m $m -t 1 -p 64 -n 32 -r 1 -o json 2>/dev/null | tr -d '\n')"
  echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
done
