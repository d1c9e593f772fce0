#!/usr/bin/env bash
# Session 29 device calls (run from the repo root; results tarred into $OUT/results.tgz):
#   call 1: STAGES="tests splits ncu" bash bench/results/gpu-s29/call.sh
#   call 2: STAGES="long moe" bash bench/results/gpu-s29/call.sh   (at once: the build is kept while warm)
# tests:  `ctest -L gpu` (the cp.async ring for decode attention, on and off, against the CPU backend; the MoE
#         host-count fix; moe_device_route on by default).
# splits: tests/gpu/attention_splits at 8k and 32k keys, registers against the ring, split bound off and 256.
# ncu:    Nsight Compute on the 32k decode attention launch (64 splits), registers and ring, where ncu runs.
# long:   Llama-3.1-8B shape, 32k prompt, decode with the ring off/on and the split bound 0/256, then one
#         --profile-ops run (GPU time per op) with the best; fp8 KV for reference.
# moe:    why the MoE bench shapes record no CUDA graphs: Qwen3-30B-A3B shape (4 layers) and Mixtral-8x7B shape
#         (2 layers) decode at batch 1 with STRATA_LOG_LEVEL=debug.
set -u
export NCCL_NVLS_ENABLE=0
t0=$(date +%s)
left() { echo $(( ${LIMIT:-585} - ($(date +%s) - t0) )); }
stages=" ${STAGES:-tests splits ncu} "
want() { [[ "$stages" == *" $1 "* ]]; }
B=build-gpu
R=$OUT/r; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 >$R/configure.log 2>&1
targets="strata attention_splits"; for t in tests/gpu/*_gpu_test.cpp; do targets="$targets $(basename $t .cpp)"; done
cmake --build $B -j16 --target $targets -- -k 0 >$R/build.log 2>&1
echo "build rc=$? $(( $(date +%s) - t0 )) s"; grep -E "error|FAILED" $R/build.log | head
if want tests; then
  (cd $B && timeout 260 ctest -L gpu --timeout 200 >$R/ctest_gpu.log 2>&1)
  grep -E "Test #|tests passed" $R/ctest_gpu.log
  grep -E "\[  FAILED|Failure|Which is|Expected" $B/Testing/Temporary/LastTest.log | head -20
  echo "tests done $(( $(date +%s) - t0 )) s"
fi
if want splits; then
  for mk in 0 256; do
    [ $(left) -lt 60 ] && break
    timeout 60 $B/tests/attention_splits --min-context 8192 --max-keys $mk >$R/attention_splits-mk$mk.txt 2>&1
    echo "-- max keys $mk"; grep -E "warps 4w|ring 4w" $R/attention_splits-mk$mk.txt | grep -E " (16|32|64|128|256) " | head -40
  done
  echo "splits done $(( $(date +%s) - t0 )) s"
fi
if want ncu && [ $(left) -gt 90 ]; then
  NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null)
  if [ -n "$NCU" ]; then
    for v in 0 4; do
      [ $(left) -lt 40 ] && break
      timeout 60 $NCU --kernel-name-base mangled --kernel-name "regex:attention_decode_warps_kernel.*Li4ELi4ELi4ELi${v}EEEv" \
        --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
        --section Occupancy --section SchedulerStats --section LaunchStats \
        $B/tests/attention_splits --min-context 32768 --splits 64 >$R/ncu-stages$v.txt 2>&1
      echo "-- ncu stages $v"; grep -E "Memory Throughput|DRAM Throughput|Duration|Achieved Occupancy|Registers Per|Stall|Warp Cycles Per Issued|Issued Ipc|No Eligible|ERR" $R/ncu-stages$v.txt | head -24
    done
  else
    echo "no ncu on this machine"
  fi
fi
M=/tmp/llama3-8b-shape-long
S=$B/strata
lc() {  # lc NAME KV OPTIONS [extra flags]: one 32k decode bench line
  local n=$1 kv=$2 ko=$3; shift 3
  timeout 70 $S bench decode --model $M --device cuda --batch 1 --prompt-len 32768 -n 32 --mib 1024 \
    --kv-cache-dtype $kv --kernel-options $ko "$@" >$R/$n.json 2>$R/$n.log
  python3 -c "import json,sys; r=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print('%-28s prefill %6.0f tok/s, decode %6.1f tok/s, %6.2f ms/step' % (sys.argv[2], r['prefill_tokens_per_s'], r['decode_tokens_per_s'], r['ms_per_step']))" $R/$n.json "$n" 2>/dev/null || tail -2 $R/$n.log
}
if want long && [ $(left) -gt 120 ]; then
  [ -f $M/model.safetensors.index.json ] || [ -f $M/model.safetensors ] ||
    $S make-model --preset llama3-8b-shape --context 131072 --dtype bf16 --out $M >$R/make-model.txt 2>&1
  for run in "bf16 0 0" "bf16 0 1" "bf16 256 0" "bf16 256 1" "bf16 512 1" "fp8 0 0"; do
    set -- $run
    [ $(left) -lt 70 ] && break
    lc lc-$1-mk$2-ring$3 $1 decode_split_max_keys=$2,decode_kv_ring=$3
  done
  if [ $(left) -gt 80 ]; then
    timeout 70 $S bench decode --model $M --device cuda --batch 1 --prompt-len 32768 -n 8 --mib 1024 \
      --kernel-options decode_kv_ring=1 --profile-ops >$R/lc-profile.json 2>$R/lc-profile.log
    sed -n '/CUDA op profile/,$p' $R/lc-profile.log | head -16
  fi
  echo "long context done $(( $(date +%s) - t0 )) s"
fi
if want moe && [ $(left) -gt 100 ]; then
  for shape in "qwen3 qwen3-30b-a3b-shape 4" "mixtral mixtral-8x7b-shape 2"; do
    set -- $shape
    [ $(left) -lt 60 ] && break
    m=/tmp/models/$2-L$3
    [ -f $m/model.safetensors ] || $S make-model --preset $2 --layers $3 --dtype bf16 --out $m >$R/moe-make-$1.txt 2>&1
    STRATA_LOG_LEVEL=debug timeout 60 $S bench decode --model $m --device cuda --batch 1 --prompt-len 16 -n 32 --mib 64 \
      >$R/moe-$1-b1.json 2>$R/moe-$1-b1.log
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], 'decode %.0f tok/s, %.3f ms/step, graph replays %s' % (r['decode_tokens_per_s'], r['ms_per_step'], r['graph_replays']))" $R/moe-$1-b1.json $1 2>/dev/null || tail -3 $R/moe-$1-b1.log
    grep -E "not recorded|moe_routed" $R/moe-$1-b1.log | sort | uniq -c | head -8
  done
fi
(cd $OUT && tar czf results.tgz r && rm -rf r)
echo "total $(( $(date +%s) - t0 )) s"
