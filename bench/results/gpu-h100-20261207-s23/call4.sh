#!/usr/bin/env bash
# Device call 4 (helper cudaopts): the 2048-token prefill of main at cc9a9a3 and of the branch, the branch first
# this time, then alternating, on a fresh machine; decode batch 1 once each at the end.
set -u
R=$(pwd); H=$R/build-cudaopts
export NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name --format=csv,noheader
t0=$(date +%s)
for t in base src; do
  ( cmake -S "$H/$t" -B "$R/build-co-$t" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
      -DBUILD_TESTING=OFF >/dev/null 2>&1 && cmake --build "$R/build-co-$t" -j 8 --target strata >"$OUT/build-$t.log" 2>&1
    echo "$t build rc=$? at $(( $(date +%s) - t0 )) s" ) &
done
wait
"$R/build-co-base/strata" make-model --preset 7b-shape --dtype bf16 --out /tmp/7b-shape >/dev/null
echo "model at $(( $(date +%s) - t0 )) s"
pf() { "$R/build-co-$1/strata" bench decode --model /tmp/7b-shape --device cuda --batch 1 --prompt-len 2048 -n 2 --mib 64 2>/dev/null |
  python3 -c "import json,sys; r=json.load(sys.stdin); print('$2 $1 prefill', round(r['prefill_tokens_per_s']), 'tok/s')"; }
for i in 1 2 3 4; do pf src $i; pf base $i; done
for i in 5 6; do pf base $i; pf src $i; done
for t in base src; do "$R/build-co-$t/strata" bench decode --model /tmp/7b-shape --device cuda --batch 1 --prompt-len 16 -n 64 \
  --mib 64 2>/dev/null | python3 -c "import json,sys; r=json.load(sys.stdin); print('$t decode b1', round(r['decode_tokens_per_s'],1), 'tok/s')"; done
echo "done at $(( $(date +%s) - t0 )) s"
