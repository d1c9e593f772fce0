#!/usr/bin/env bash
# tests/gpu/multi_gpu.sh: the multi-GPU issue (#9) in as few device calls as possible, on a machine with
# 2, 4 or 8 GPUs of one host (NVLink multicast stays off: NCCL_NVLS_ENABLE=0). Phases, each well inside a
# 10-minute call; WORK keeps the build and models between calls on a warm machine:
#   build      configure + build strata with CUDA (sm_90)
#   correct    7b-shape bf16: TP2/4/8, PP2/4, TP4xPP2 (those that fit the GPUs) with NCCL, greedy ids
#              against one GPU (bf16 TP sums partial products in another order, so the first differing
#              position is reported, not just equal / not equal)
#   scaling    `strata bench scaling` over the plans that fit (SCALING_PRESET, default 13b-shape: the
#              issue's targets are on a model that fits one GPU): batch-1 latency and batch-64 throughput,
#              communication and hidden fraction per plan, predicted against measured
#   big        a 70B-shaped bf16 checkpoint (~140 GB: needs the disk and >= 2 x 141 GB or 4 x 80 GB of
#              GPU memory) generated across all GPUs, then served under load (`strata bench serve`)
# Usage: tests/gpu/multi_gpu.sh [build|correct|scaling|big|all]...   Env: WORK (default /tmp/strata-mgpu),
# OUT (results; default bench/results/multi-gpu-<host>-<date>), LAYOUTS (names to run, default all that
# fit), SCALING_PRESET, BIG_TP / BIG_PP (the 70B layout; default TP over every GPU).
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
export NCCL_NVLS_ENABLE=0 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
work="${WORK:-/tmp/strata-mgpu}"
build="$work/build"
strata="$build/strata"
out="${OUT:-bench/results/multi-gpu-$(hostname)-$(date +%Y%m%d-%H%M%S)}"
gpus=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | wc -l)
[ "$gpus" -ge 2 ] || { echo "multi_gpu.sh: $gpus GPU(s) visible; this needs 2 or more"; exit 2; }
mkdir -p "$work" "$out"
declare -a SUMMARY
note() { SUMMARY+=("$(printf '%-34s %s' "$1" "$2")"); echo "$1: $2"; }

# name tensor pipeline ranks
layouts=("tp2 2 1 2" "tp4 4 1 4" "tp8 8 1 8" "pp2 1 2 2" "pp4 1 4 4" "tp4-pp2 4 2 8")
if [ -n "${LAYOUTS:-}" ]; then  # e.g. LAYOUTS="tp2 pp2": only those
  keep=()
  for l in "${layouts[@]}"; do [[ " $LAYOUTS " == *" ${l%% *} "* ]] && keep+=("$l"); done
  layouts=("${keep[@]}")
fi

phase_build() {
  { nvidia-smi; nvidia-smi topo -m; nproc; free -g; df -h "$work" /dev/shm; } >"$out/machine.txt" 2>&1
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DBUILD_TESTING=OFF >"$work/configure.log" 2>&1 || { tail -20 "$work/configure.log"; return 1; }
  cmake --build "$build" -j "$(nproc)" --target strata >"$work/build.log" 2>&1 || { grep -E "error" "$work/build.log" | head; return 1; }
  note "build" "ok ($gpus GPUs: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1))"
}

plan_file() {  # name tensor pipeline model [schedule] -> path of a plan
  local f="$work/$1.yaml"
  printf 'model:\n  path: %s\nparallel:\n  tensor: %s\n  pipeline: %s\n  schedule: %s\ncomm:\n  backend: nccl\n  overlap_chunks: 2\n  timeout_s: 120\n' \
    "$4" "$2" "$3" "${5:-steps}" >"$f"
  echo "$f"
}

first_difference() {  # two "ids: ..." lines -> index of the first differing id, or "equal"
  python3 - "$1" "$2" <<'PY'
import sys
a, b = sys.argv[1].split()[1:], sys.argv[2].split()[1:]
if a == b and a: print("equal"); sys.exit()
n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
print(f"first difference at token {n} of {max(len(a), len(b))}")
PY
}

# Teacher-forced logits of two runs over the same ids: tests/gpu/compare_logits.py's one-line report.
compare_logits() { python3 "$root/tests/gpu/compare_logits.py" "$1" "$2"; }

phase_correct() {
  local model="$work/7b-shape"
  [ -f "$model/model.safetensors" ] || "$strata" make-model --preset 7b-shape --dtype bf16 --out "$model" >/dev/null
  local prompt="1 5 9 33 2 7 80 41 300 12"
  local args=(--device cuda --prompt-ids "$prompt" -n 64 --print-ids --quiet)
  local single eager teacher
  single=$("$strata" generate --model "$model" "${args[@]}" 2>"$out/single.log" | grep '^ids:')
  # Pipeline stages and TP ranks run eagerly; the one-GPU eager run uses exactly the same kernels.
  eager=$("$strata" generate --model "$model" "${args[@]}" --cuda-graphs off 2>"$out/single-eager.log" | grep '^ids:')
  echo "$single" >"$out/ids-single.txt"
  echo "$eager" >"$out/ids-single-eager.txt"
  note "correct 1 GPU graphs vs eager" "$(first_difference "$single" "$eager")"
  teacher="$prompt ${single#ids: }"
  "$strata" logits --model "$model" --device cuda --prompt-ids "$teacher" --all >"$work/logits-single.json" 2>/dev/null
  # The CPU backend computes in f32: how far one GPU's bf16 activations already are from it is the
  # yardstick for the multi-GPU differences below.
  "$strata" logits --model "$model" --device cpu --prompt-ids "$teacher" --all >"$work/logits-cpu.json" 2>/dev/null
  note "correct 1 GPU logits vs CPU f32" "$(compare_logits "$work/logits-cpu.json" "$work/logits-single.json" | tee "$out/logits-single-vs-cpu.txt")"
  for l in "${layouts[@]}"; do
    read -r name tp pp ranks <<<"$l"
    if [ "$ranks" -gt "$gpus" ]; then note "correct $name" "skipped: needs $ranks GPUs"; continue; fi
    local plan multi
    plan=$(plan_file "$name" "$tp" "$pp" "$model")
    multi=$(timeout 300 mpirun -np "$ranks" "$strata" generate --plan "$plan" "${args[@]}" 2>"$out/$name.log" | grep '^ids:')
    echo "$multi" >"$out/ids-$name.txt"
    if [ -z "$multi" ]; then note "correct $name" "FAILED (see $name.log)"; tail -5 "$out/$name.log"; continue; fi
    note "correct $name greedy" "vs 1 GPU: $(first_difference "$single" "$multi"); vs 1 GPU eager: $(first_difference "$eager" "$multi")"
    if [ "$pp" -eq 1 ]; then  # decode recorded in CUDA graphs (NCCL captured); a broken graph parts at once
      local graphed
      graphed=$(STRATA_CUDA_GRAPHS_TP=1 timeout 300 mpirun -x STRATA_CUDA_GRAPHS_TP -np "$ranks" "$strata" generate \
        --plan "$plan" "${args[@]}" 2>"$out/$name-graphs.log" | grep '^ids:')
      echo "$graphed" >"$out/ids-$name-graphs.txt"
      note "correct $name graphs greedy" "vs $name eager: $(first_difference "$multi" "$graphed"); vs 1 GPU: $(first_difference "$single" "$graphed")"
    fi
    timeout 300 mpirun -np "$ranks" "$strata" logits --plan "$plan" --device cuda --prompt-ids "$teacher" --all \
      >"$work/logits-$name.json" 2>"$out/$name-logits.log"
    note "correct $name logits" "$(compare_logits "$work/logits-single.json" "$work/logits-$name.json" | tee "$out/logits-$name.txt")"
    note "correct $name logits vs CPU f32" "$(compare_logits "$work/logits-cpu.json" "$work/logits-$name.json" | tee "$out/logits-$name-vs-cpu.txt")"
    if [ "$pp" -gt 1 ]; then  # the interleaved schedule runs the same kernels on the same rows
      local intl
      intl=$(timeout 300 mpirun -np "$ranks" "$strata" generate --plan "$(plan_file "$name-intl" "$tp" "$pp" "$model" interleaved)" \
        "${args[@]}" 2>"$out/$name-intl.log" | grep '^ids:')
      echo "$intl" >"$out/ids-$name-intl.txt"
      note "correct $name interleaved greedy" "vs $name: $(first_difference "$multi" "$intl")"
    fi
  done
}

phase_scaling() {
  local sweep="$work/sweep.yaml" preset="${SCALING_PRESET:-13b-shape}"
  local model="$work/$preset"
  [ -f "$model/model.safetensors" ] || "$strata" make-model --preset "$preset" --dtype bf16 --out "$model" >/dev/null
  {
    echo "name: multi-gpu-$preset"
    echo "model:"
    echo "  path: $model"
    echo "hardware: bench/hardware/h100-sxm-node.yaml"
    echo "launcher: mpirun"
    echo "device: cuda"
    echo "plans:"
    echo "  - {name: tp1, tensor: 1}"
    for l in "${layouts[@]}"; do
      read -r name tp pp ranks <<<"$l"
      [ "$ranks" -le "$gpus" ] || continue
      if [ "$pp" -gt 1 ]; then
        echo "  - {name: $name, tensor: $tp, pipeline: $pp, micro_batches: $pp}"
        echo "  - {name: $name-intl, tensor: $tp, pipeline: $pp, schedule: interleaved}"
      else
        echo "  - {name: $name, tensor: $tp}"
        # Decode GEMMs below ~128 rows are weight-bound, so decode steps are not split for overlap
        # (comm.overlap_min_tokens 128). The same plan with the split forced shows what it would cost.
        echo "  - {name: $name-chunk, tensor: $tp, overlap_min_tokens: 1}"
      fi
    done
    echo "batch: [1, 64]"
    echo "prompt_len: [128]"
    echo "output_len: [64]"
    echo "timeout_s: 600"
  } >"$sweep"
  "$strata" bench scaling --sweep "$sweep" --out "$out/scaling" >"$out/scaling.txt" 2>&1
  note "scaling" "rc=$? ($out/scaling.txt)"
  tail -20 "$out/scaling.txt"
  # TP decode recorded in CUDA graphs (NCCL ops captured), still behind STRATA_CUDA_GRAPHS_TP=1.
  local tp_sweep="$work/sweep-tp-graphs.yaml"
  grep -v -- "-intl\|pp[0-9]" "$sweep" | sed 's/^name: .*/name: tp-graphs/' >"$tp_sweep"
  STRATA_CUDA_GRAPHS_TP=1 "$strata" bench scaling --sweep "$tp_sweep" --launcher-args "-x STRATA_CUDA_GRAPHS_TP" \
    --out "$out/scaling-tp-graphs" >"$out/scaling-tp-graphs.txt" 2>&1
  note "scaling, TP with CUDA graphs" "rc=$? ($out/scaling-tp-graphs.txt)"
  tail -8 "$out/scaling-tp-graphs.txt"
}

phase_big() {
  # The checkpoint goes to /dev/shm where it has room (tmpfs: no second copy in the page cache, and
  # the lent machines' disks are smaller than the model), else next to the build.
  local dir="$work" need=$((150 * 1024 * 1024))  # KiB
  if [ -f /dev/shm/strata-mgpu/70b-shape/model.safetensors ] ||
    [ "$(df -k --output=avail /dev/shm 2>/dev/null | tail -1)" -gt "$need" ] 2>/dev/null; then
    dir=/dev/shm/strata-mgpu
  fi
  local model="$dir/70b-shape"
  if [ ! -f "$model/model.safetensors" ]; then
    local free_kib
    free_kib=$(df -k --output=avail "$(dirname "$dir")" | tail -1)
    if [ "$free_kib" -lt "$need" ]; then note "big" "skipped: $((free_kib / 1024 / 1024)) GiB free, ~140 needed"; return; fi
    local t0=$SECONDS
    "$strata" make-model --preset 70b-shape --dtype bf16 --out "$model" >/dev/null || { note "big" "make-model failed"; return; }
    note "big make-model" "$(du -sh "$model" | cut -f1) in $((SECONDS - t0)) s ($model)"
  fi
  local plan btp="${BIG_TP:-$gpus}" bpp="${BIG_PP:-1}"
  plan=$(plan_file "big-tp$btp-pp$bpp" "$btp" "$bpp" "$model")
  timeout 900 mpirun -np "$gpus" "$strata" generate --plan "$plan" --device cuda --prompt-ids "1 5 9 33" -n 32 --print-ids \
    >"$out/big-generate.txt" 2>"$out/big-generate.log"
  note "big generate (tp$btp pp$bpp)" "rc=$? $(grep -E 'tok/s' "$out/big-generate.log" | tail -1)"
  mpirun -np "$gpus" "$strata" serve --plan "$plan" --device cuda --port 0 --kv-tokens 16384 >"$out/big-serve.log" 2>&1 &
  local server=$! port=""
  for _ in $(seq 1 1800); do
    port=$(sed -n 's/.*listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$out/big-serve.log" | head -1)
    if [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then break; fi
    kill -0 $server 2>/dev/null || break
    sleep 0.5
  done
  if [ -n "$port" ]; then
    "$strata" bench serve --url "http://127.0.0.1:$port" --concurrency 4 --requests 8 --prompt-len 128 \
      --output-len 16 --prompt-dist fixed --output-dist fixed >/dev/null  # warm-up
    "$strata" bench serve --url "http://127.0.0.1:$port" --concurrency 32 --requests 64 --prompt-len 128 \
      --output-len 64 --prompt-dist fixed --output-dist fixed >"$out/big-serve.json"
    note "big serve (tp$btp pp$bpp, 32 concurrent)" "$(python3 -c "import json,sys;r=json.load(open('$out/big-serve.json'));print(f\"{r['output_tokens_per_s']:.0f} tok/s, TTFT p50 {r['ttft_ms']['p50']:.0f} ms, TPOT p50 {r['tpot_ms']['p50']:.1f} ms\")")"
  else
    note "big serve" "FAILED to start (big-serve.log)"
  fi
  kill -TERM $server 2>/dev/null; wait $server 2>/dev/null
}

phases=("$@")
[ ${#phases[@]} -eq 0 ] && phases=(all)
for p in "${phases[@]}"; do
  case "$p" in
    build) phase_build ;;
    correct) phase_correct ;;
    scaling) phase_scaling ;;
    big) phase_big ;;
    all) phase_build && phase_correct && phase_scaling && phase_big ;;
    *) echo "unknown phase '$p'" >&2; exit 2 ;;
  esac
done
echo
echo "== summary ($gpus GPUs, results in $out)"
for line in "${SUMMARY[@]}"; do echo "$line"; done
