#!/usr/bin/env bash
# Session 26, device call 1: build strata + every GPU test (CUDA sm_90), run `ctest -L gpu` (the expert-offload
# and Q8_0 MoE checks left unverified last session), then scripts/bench-moe.sh with fewer layers (the disk and the
# 10-minute command limit): Mixtral-8x7B shape 4 layers, Qwen3-30B-A3B shape 8 layers, transformers peer in the run.
set -u
export NCCL_NVLS_ENABLE=0
t0=$(date +%s)
B=build-gpu
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ ! -x $B/strata ]; then
  cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 >$OUT/configure.log 2>&1
fi
targets="strata gpu_monitor_test"; for t in tests/gpu/*_gpu_test.cpp; do targets="$targets $(basename $t .cpp)"; done
cmake --build $B -j16 --target $targets >$OUT/build.log 2>&1
echo "build rc=$? $(( $(date +%s) - t0 )) s"; grep -E "error|FAILED" $OUT/build.log | head
(cd $B && ctest -L gpu --timeout 200 >$OUT/ctest_gpu.log 2>&1)
grep -E "Test #|tests passed" $OUT/ctest_gpu.log
grep -E "\[  FAILED|Failure|Which is|Expected|max \|" $B/Testing/Temporary/LastTest.log | head -30
$B/tests/moe_gpu_test --gtest_filter='*Offload*:*q8_0*' 2>&1 | grep -E "OK|FAILED|max|diff|agree" | head -20
echo "tests done $(( $(date +%s) - t0 )) s"
mkdir -p /tmp/models
STRATA_GPU_BUILD=$B MODELS=/tmp/models MIXTRAL_LAYERS=${MIXTRAL_LAYERS:-4} QWEN3_LAYERS=${QWEN3_LAYERS:-8} SHAPES="${SHAPES:-mixtral qwen3}" \
  timeout $(( 585 - ($(date +%s) - t0) )) bash scripts/bench-moe.sh 2>&1 | tail -25
cp -r bench/results/moe-* $OUT/ 2>/dev/null
echo "total $(( $(date +%s) - t0 )) s"
