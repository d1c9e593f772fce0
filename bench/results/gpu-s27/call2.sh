#!/usr/bin/env bash
# Session 27, device call 2 (same warm machine as call 1): where one LLaVA image request's time goes
# (--profile-ops, graphs off), then scripts/bench-long-context.sh at 8k and 32k with bf16 and fp8 KV.
set -u
export NCCL_NVLS_ENABLE=0
t0=$(date +%s)
B=build-gpu
[ -x $B/strata ] || { cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 >$OUT/configure.log 2>&1; cmake --build $B -j16 --target strata >$OUT/build.log 2>&1; }
echo "build $(( $(date +%s) - t0 )) s"
M=/tmp/llava-7b-shape
if [ -d $M/images ]; then
  img=$(ls $M/images/*.png | head -1)
  timeout 120 $B/strata generate --model $M --device cuda --image $img --prompt "Describe the image." -n 8 --profile-ops \
    >$OUT/llava-profile.txt 2>&1
  tail -45 $OUT/llava-profile.txt
fi
echo "profile done $(( $(date +%s) - t0 )) s"
STRATA_GPU_BUILD=$B CONTEXTS="${CONTEXTS:-8192 32768}" DECODE_TOKENS=32 OUT=$OUT/long-context \
  timeout $(( 585 - ($(date +%s) - t0) )) bash scripts/bench-long-context.sh 2>&1 | tail -20
echo "total $(( $(date +%s) - t0 )) s"
