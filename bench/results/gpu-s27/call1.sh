#!/usr/bin/env bash
# Session 27, device call 1: build strata + every GPU test (sm_90), `ctest -L gpu` on the merged main (the
# moegemm + qgemm2 + nextgguf merge never ran as one tree), then the vision serving sweep: the engine's step
# budget --max-batch-tokens 2048 (default) against 512, rates 16/24/32, no peer (it ran last session).
set -u
export NCCL_NVLS_ENABLE=0
t0=$(date +%s)
B=build-gpu
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ ! -x $B/strata ]; then
  cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 >$OUT/configure.log 2>&1
fi
grep -E "image decoding" $OUT/configure.log
targets="strata gpu_monitor_test"; for t in tests/gpu/*_gpu_test.cpp; do targets="$targets $(basename $t .cpp)"; done
cmake --build $B -j16 --target $targets >$OUT/build.log 2>&1
echo "build rc=$? $(( $(date +%s) - t0 )) s"; grep -E "error|FAILED" $OUT/build.log | head
(cd $B && timeout 200 ctest -L gpu --timeout 150 >$OUT/ctest_gpu.log 2>&1)
grep -E "Test #|tests passed" $OUT/ctest_gpu.log
grep -E "\[  FAILED|Failure|Which is|Expected" $B/Testing/Temporary/LastTest.log | head -20
echo "tests done $(( $(date +%s) - t0 )) s"
for mbt in 512 2048; do
  left=$(( 590 - ($(date +%s) - t0) )); [ $left -lt 60 ] && break
  STRATA_GPU_BUILD=$B SKIP_PEER=1 RATES="${RATES:-16 24 32}" SECONDS_PER_RATE=8 OUT=$OUT/vision-mbt$mbt \
    SERVE_ARGS="--max-batch-tokens $mbt" timeout $(( mbt == 512 ? left / 2 : left - 5 )) bash scripts/bench-vision.sh 2>&1 | tail -14
  echo "vision mbt $mbt done $(( $(date +%s) - t0 )) s"
done
echo "total $(( $(date +%s) - t0 )) s"
