#!/usr/bin/env bash
# scripts/demo.sh: one command on a fresh machine: install dependencies, build, make the default
# model (a ~125M-parameter random-weight Llama, "small") when absent, and generate with it on 4 CPU
# ranks (2 pipeline stages x 2 tensor ranks) under mpirun, printing the text and tokens/s.
# With ../shared/models present it also tells the trained stories260K's story on the same 4-rank
# layout. (No small trained Llama-family checkpoint in a format strata reads, llama2.c, GGUF
# F32/F16/BF16/Q8_0/Q4_0 or safetensors, was found in a PyPI package to install here instead.)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/scripts/setup.sh"
export CCACHE_DIR="${CCACHE_DIR:-$root/.cache/ccache}"
"$root/scripts/build.sh" "$root/build"
strata="$root/build/strata"

if [ ! -f models/demo-small/model.safetensors ]; then
  echo "== making the demo model (preset small, f16) in models/demo-small"
  "$strata" make-model --preset small --dtype f16 --out models/demo-small
fi

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
mpirun_flags=(--oversubscribe -np 4)
echo "== strata plan --check configs/demo-tp2-pp2.yaml"
"$strata" plan --check configs/demo-tp2-pp2.yaml --model models/demo-small >build/demo-plan.txt
head -n 16 build/demo-plan.txt
echo
echo "== mpirun -np 4 strata generate --plan configs/demo-tp2-pp2.yaml (random weights: the text is noise)"
mpirun "${mpirun_flags[@]}" "$strata" generate --plan configs/demo-tp2-pp2.yaml \
  --prompt "Once upon a time" -n 48 --ignore-eos

stories="$root/../shared/models/stories260K"
if [ -f "$stories/stories260K.bin" ]; then
  echo
  echo "== the trained stories260K on 4 ranks (2 pipeline stages x 2 tensor ranks)"
  plan="$root/build/demo-stories-tp2-pp2.yaml"
  printf 'model:\n  path: %s\nparallel:\n  tensor: 2\n  pipeline: 2\n' "$stories/stories260K.bin" >"$plan"
  mpirun "${mpirun_flags[@]}" "$strata" generate --plan "$plan" --prompt "Once upon a time" -n 120
fi
