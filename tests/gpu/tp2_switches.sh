#!/usr/bin/env bash
# tests/gpu/tp2_switches.sh: TP2 over MPI on one GPU against one GPU, greedy ids of the run.sh fixture, under
# settings of the CUDA backend's fusion switches: tells a near tie on the tiny random fixture (ids that move
# with the switches on both sides alike) from an error of one fused path (one side alone off). Needs a GPU
# build in build-gpu (tests/gpu/run.sh makes one).
# Usage: [SETTINGS="fuse_swiglu=1|fuse_swiglu=0"] tests/gpu/tp2_switches.sh   (each: a --kernel-options value)
set -u
cd "$(dirname "$0")/../.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
export NCCL_NVLS_ENABLE=0
model=tests/fixtures/hf/llama_gqa_untied
plan=build-gpu/gpu-tensor2.yaml
printf 'model:\n  path: %s\nparallel:\n  tensor: 2\ncomm:\n  backend: mpi\n  timeout_s: 60\n' "$model" >"$plan"
args=(--device cuda --prompt-ids "1 5 9 33 2 7 80 41" -n 24 --print-ids --quiet)
IFS='|' read -r -a settings <<<"${SETTINGS:-fuse_swiglu=1|fuse_swiglu=0}"
for s in "${settings[@]}"; do
  one=$(build-gpu/strata generate --model "$model" "${args[@]}" --kernel-options "$s" 2>/dev/null | grep '^ids:')
  two=$(mpirun --oversubscribe -np 2 build-gpu/strata generate --plan "$plan" "${args[@]}" --kernel-options "$s" \
    2>/dev/null | grep '^ids:')
  echo "$s one: $one"
  echo "$s tp2: $two"
done
