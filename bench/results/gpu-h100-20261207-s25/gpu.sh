#!/usr/bin/env bash
# One-off final GPU check of the merged main (session 25), lean: every GPU test, then q4_0 7b-shape decode with
# the tensor-core quantized GEMM on and off (quant_mma_max_rows=0: the GEMV/cuBLAS path) in the same run.
set -u
export NCCL_NVLS_ENABLE=0
t0=$(date +%s)
B=build-gpu
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
cmake -S . -B $B -G Ninja -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 >$OUT/configure.log 2>&1
targets="strata gpu_monitor_test"; for t in tests/gpu/*_gpu_test.cpp; do targets="$targets $(basename $t .cpp)"; done
cmake --build $B -j16 --target $targets >$OUT/build.log 2>&1
echo "build rc=$? $(( $(date +%s) - t0 )) s"; grep -E "error|FAILED" $OUT/build.log | head
M=/tmp/7b-q4_0.gguf
( $B/strata make-model --preset 7b-shape --format gguf --dtype q4_0 --out $M >$OUT/make.log 2>&1; echo done >$OUT/made ) &
(cd $B && ctest -L gpu --timeout 200 >$OUT/ctest_gpu.log 2>&1)
grep -E "Test #|tests passed" $OUT/ctest_gpu.log
grep -E "\[  FAILED|Failure|Which is|Expected" $B/Testing/Temporary/LastTest.log | head -30
$B/tests/gpu_monitor_test --gtest_brief=1 2>&1 | tail -1
echo "tests done $(( $(date +%s) - t0 )) s"
while [ ! -f $OUT/made ] && [ $(( $(date +%s) - t0 )) -lt 330 ]; do sleep 2; done
for run in "b1 --batch 1" "b16 --batch 16" "b32 --batch 32"; do
  read -r tag args <<<"$run"
  for ko in "quant_mma_max_rows=32" "quant_mma_max_rows=0"; do
    [ $(( $(date +%s) - t0 )) -gt 400 ] && break 2
    $B/strata bench decode --model $M --device cuda $args --prompt-len 16 -n 32 --mib 64 --kernel-options $ko \
      >$OUT/q4_0-$tag-$ko.json 2>$OUT/q4_0-$tag-$ko.err
    python3 -c "import json,sys; r=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print(sys.argv[2], sys.argv[3], 'decode %.1f tok/s, weights %.0f GB/s' % (r['decode_tokens_per_s'], r['weight_gbs']))" $OUT/q4_0-$tag-$ko.json $tag $ko || tail -2 $OUT/q4_0-$tag-$ko.err
  done
done
echo "total $(( $(date +%s) - t0 )) s"
