#!/usr/bin/env bash
# Session 28 (session 27 call 3, not run then: no machine was lent), plus decode_split_by_length: the session's CUDA changes on one machine. Build;
# `ctest -L gpu` (fp8 KV prefill and the vision tower's attention on the tensor-core prefill kernel, the
# device-routed MoE decode, the FP8 tensor-core matmuls: each option on and off against references); the decode
# attention kernels per split count at 8k and 32k keys (attention_splits); `kernel_bench --fp8`; long context at
# 32k with the decode split bound off and on and fp8 prefill on the tensor-core kernel; then the vision serving
# sweep with the tower's attention on the tensor-core kernel. Every stage checks the time left; results are
# tarred into $OUT at the end (the device returns a limited number of files). All of it takes more than one
# call's 10 minutes: run `STAGES="tests splits fp8 long" bash call.sh`, then at once (the machine stays warm
# for 30 s, and the build is kept) `STAGES="vision" bash call.sh` (and `STAGES="long"` if the first ran out).
set -u
export NCCL_NVLS_ENABLE=0
t0=$(date +%s)
left() { echo $(( ${LIMIT:-585} - ($(date +%s) - t0) )); }
stages=" ${STAGES:-tests splits fp8 long vision} "
want() { [[ "$stages" == *" $1 "* ]]; }
B=build-gpu
R=$OUT/r; mkdir -p $R  # everything goes back as one tarball (the file count is limited)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 >$R/configure.log 2>&1
targets="strata attention_splits kernel_bench"; for t in tests/gpu/*_gpu_test.cpp; do targets="$targets $(basename $t .cpp)"; done
cmake --build $B -j16 --target $targets -- -k 0 >$R/build.log 2>&1
echo "build rc=$? $(( $(date +%s) - t0 )) s"; grep -E "error|FAILED" $R/build.log | head
if want tests; then
  (cd $B && timeout 200 ctest -L gpu --timeout 150 >$R/ctest_gpu.log 2>&1)
  grep -E "Test #|tests passed" $R/ctest_gpu.log
  grep -E "\[  FAILED|Failure|Which is|Expected|error" $B/Testing/Temporary/LastTest.log | head -20
  echo "tests done $(( $(date +%s) - t0 )) s"
fi
if want splits; then
  timeout 60 $B/tests/attention_splits >$R/attention_splits.txt 2>&1
  grep -E "ctx 32768" $R/attention_splits.txt | grep -E "tiles|warps 4w/1\*" | head -24
  echo "splits done $(( $(date +%s) - t0 )) s"
fi
# FP8 weights on the e4m3 tensor cores (fp8_cublaslt; the GEMM's correctness is fp8_gpu_test's, in ctest above).
want fp8 && { timeout 60 $B/tests/kernel_bench --fp8 --quick >$R/kernel_bench_fp8.txt 2>&1; tail -14 $R/kernel_bench_fp8.txt; }
M=/tmp/llama3-8b-shape-long
if want long && [ $(left) -gt 120 ]; then
  S=$B/strata
  [ -f $M/model.safetensors.index.json ] || [ -f $M/model.safetensors ] ||
    $S make-model --preset llama3-8b-shape --context 131072 --dtype bf16 --out $M >$R/make-model.txt 2>&1
  for run in "bf16 0 0" "bf16 0 1" "bf16 256 0" "bf16 1024 0" "fp8 0 0" "fp8 0 1" "fp8 256 0"; do
    set -- $run
    [ $(left) -lt 70 ] && break
    n=lc-32768-$1-$2-$3
    timeout 60 $S bench decode --model $M --device cuda --batch 1 --prompt-len 32768 -n 32 --mib 1024 \
      --kv-cache-dtype $1 --kernel-options decode_split_max_keys=$2,decode_split_by_length=$3,prefill_mma_fp8_kv=1 \
      >$R/$n.json 2>$R/$n.log
    python3 -c "import json,sys; r=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print('32k KV $1 max_keys $2 by_length $3: prefill %.0f tok/s, decode %.1f tok/s, %.2f ms/step' % (r['prefill_tokens_per_s'], r['decode_tokens_per_s'], r['ms_per_step']))" $R/$n.json 2>/dev/null || tail -2 $R/$n.log
  done
fi
echo "long context done $(( $(date +%s) - t0 )) s"
if want vision && [ $(left) -gt 150 ]; then
  STRATA_GPU_BUILD=$B SKIP_PEER=1 RATES="${RATES:-16 24}" SECONDS_PER_RATE=8 OUT=$R/vision \
    SERVE_ARGS="--kernel-options encoder_flash_attention=1" \
    timeout $(( $(left) - 10 )) bash scripts/bench-vision.sh 2>&1 | tail -12
fi
(cd $OUT && tar czf results.tgz r && rm -rf r)
echo "total $(( $(date +%s) - t0 )) s"
