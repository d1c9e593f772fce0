#!/usr/bin/env bash
# Session 30 device calls (run from the repo root; results packed into $OUT/results.tgz):
#   call A: STAGES="tests splits long" bash bench/results/gpu-s30/call.sh
#   call B: STAGES="spec moe" bash bench/results/gpu-s30/call.sh   (at once: the build is kept while warm)
# tests:  `ctest -L gpu` with the cp.async ring the default for split decode attention.
# splits: tests/gpu/attention_splits at 32k keys (Llama-3-8B heads), one split count at a time: is the
#         rule's ~4 blocks an SM still right for the ring (Nsight showed 22% achieved occupancy at 64 splits)?
# long:   scripts/bench-long-context.sh at 8k and 32k, bf16 and fp8 KV (decode attention against copy).
# spec:   speculative decoding on the GPU: 7b-shape target (random bf16), plain / prompt lookup / a 2-layer
#         draft cut from the same seed, on a prompt cycling through 8 tokens and on one without repetition.
# moe:    scripts/bench-moe.sh, Qwen3-30B-A3B shape (8 of 48 layers), batch 1 and 16, no peer.
set -u
export NCCL_NVLS_ENABLE=0
t0=$(date +%s)
left() { echo $(( ${LIMIT:-585} - ($(date +%s) - t0) )); }
stages=" ${STAGES:-tests splits long} "
want() { [[ "$stages" == *" $1 "* ]]; }
B=build-cuda
R=$OUT/r; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 >$R/configure.log 2>&1
targets="strata attention_splits"; want tests && for t in tests/gpu/*_gpu_test.cpp; do targets="$targets $(basename $t .cpp)"; done
cmake --build $B -j16 --target $targets -- -k 0 >$R/build.log 2>&1
echo "build rc=$? $(( $(date +%s) - t0 )) s"; grep -E "error|FAILED" $R/build.log | head
if want tests; then
  (cd $B && timeout 200 ctest -L gpu --timeout 150 >$R/ctest_gpu.log 2>&1)
  grep -E "tests passed|\*\*\*Failed|Timeout" $R/ctest_gpu.log
  grep -E "\[  FAILED|Failure|Which is|Expected" $B/Testing/Temporary/LastTest.log | head -20
  echo "tests done $(( $(date +%s) - t0 )) s"
fi
if want splits; then
  for sp in 32 64 128 256; do
    [ $(left) -lt 300 ] && break
    timeout 40 $B/tests/attention_splits --min-context 32768 --splits $sp >$R/splits-32k-$sp.txt 2>&1
    grep -E " (warps 4w/1|ring 4w)" $R/splits-32k-$sp.txt | head -4
  done
  echo "splits done $(( $(date +%s) - t0 )) s"
fi
if want long && [ $(left) -gt 200 ]; then
  STRATA_GPU_BUILD=$PWD/$B CONTEXTS="8192 32768" KV_DTYPES="bf16 fp8" DECODE_TOKENS=32 OUT=$R/long \
    timeout $(( $(left) - 15 )) bash scripts/bench-long-context.sh 2>&1 | tail -8
  echo "long done $(( $(date +%s) - t0 )) s"
fi
S=$B/strata
if want spec && [ $(left) -gt 150 ]; then
  T=/tmp/m7b; D=/tmp/m7b-l2
  [ -f $T/config.json ] || $S make-model --preset 7b-shape --dtype bf16 --out $T >$R/make-7b.txt 2>&1
  [ -f $D/config.json ] || $S make-model --preset 7b-shape --layers 2 --dtype bf16 --out $D >$R/make-7b-l2.txt 2>&1
  for spec in "plain" "ngram --speculative ngram --spec-tokens 4" "draft --draft-model $D --spec-tokens 4"; do
    set -- $spec; name=$1; shift
    for period in 8 0; do
      [ $(left) -lt 40 ] && break
      timeout 60 $S bench decode --model $T --device cuda --batch 1 --prompt-len 64 -n 128 --repeat-period $period \
        --mib 256 "$@" >$R/spec-$name-p$period.json 2>$R/spec-$name-p$period.log
      python3 -c "import json,sys; r=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); s=r['speculative']; print('%-6s period %s: %7.1f tok/s, acceptance %.2f, tokens/step %.2f, %.2f ms/step' % (sys.argv[2], sys.argv[3], r['decode_tokens_per_s'], s['acceptance_rate'], s['tokens_per_step'], s['ms_per_decode_step']))" $R/spec-$name-p$period.json $name $period 2>/dev/null || tail -2 $R/spec-$name-p$period.log
    done
  done
  echo "spec done $(( $(date +%s) - t0 )) s"
fi
if want moe && [ $(left) -gt 150 ]; then
  rm -rf /tmp/m7b /tmp/m7b-l2
  STRATA_GPU_BUILD=$PWD/$B SHAPES=qwen3 QWEN3_LAYERS=8 BATCHES="1 16" SKIP_PEER=1 SKIP_OFFLOAD=1 MODELS=/tmp/moe \
    RESULTS=$R/moe timeout $(( $(left) - 15 )) bash scripts/bench-moe.sh 2>&1 | tail -12
  echo "moe done $(( $(date +%s) - t0 )) s"
fi
(cd $OUT && tar czf results.tgz r && rm -rf r)
echo "total $(( $(date +%s) - t0 )) s"
