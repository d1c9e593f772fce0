#!/bin/bash
# The commands behind README.md in this folder (run from the repository root after a CPU build). The sources:
#   SmolLM2-135M-Instruct: the Q4_1 GGUF that scripts/demo.sh installs, made a Hugging Face f16 directory by
#     /work/.venv/bin/python tools/reference/gguf_to_hf.py models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf $WORK/smollm2-f16
#   stories260K: ../shared/models/stories260K-hf (f32 safetensors).
# Texts: calibration and evaluation never share a file. SmolLM2 calibrates on the first 16000 bytes of the CUDA
# cuBLAS license (nvidia_cublas-13.4.1.3.dist-info/licenses/License.txt in the venv) and is scored on the first
# 8000 bytes of numpy 2.4.6's LICENSE.txt (as README's FP8 KV table); stories260K calibrates on
# calibration_story.txt here and is scored on bench/results/kvfp8-cpu-20261207/story.txt.
set -x
S=build/strata
WORK=${WORK:-/tmp/calib}
SITE=/work/.venv/lib/python3.11/site-packages
head -c 16000 $SITE/nvidia_cublas-13.4.1.3.dist-info/licenses/License.txt > $WORK/calib.txt
head -c 8000 $SITE/numpy-2.4.6.dist-info/licenses/LICENSE.txt > $WORK/eval.txt

M=$WORK/smollm2-f16
Q="--calibration $WORK/calib.txt --calibration-tokens 2048 --force"
$S quantize --model $M --type w8a8-int8 $Q --out $WORK/smol-w8a8
$S quantize --model $M --type w8a8-int8 --no-smoothing --force --out $WORK/smol-w8a8-plain
$S quantize --model $M --type fp8 --force --out $WORK/smol-fp8
$S quantize --model $M --type fp8 --activation-scales static $Q --out $WORK/smol-fp8-static
$S quantize --model $M --type w4a16 --group-size 64 $Q --out $WORK/smol-w4a16
$S quantize --model $M --type w4a16 --group-size 64 --no-smoothing --force --out $WORK/smol-w4a16-plain
$S quantize --model $M --type w4a16 --group-size 32 $Q --out $WORK/smol-w4a16-g32
$S quantize --model $M --type w4a16 --group-size 32 --no-smoothing --force --out $WORK/smol-w4a16-g32-plain
$S quantize --model $M --type q4_0 --pure --force --out $WORK/smol-q4_0.gguf
$S perplexity --model $WORK/smol-q4_0.gguf --text-file $WORK/eval.txt
for d in $M $WORK/smol-w8a8 $WORK/smol-w8a8-plain $WORK/smol-fp8 $WORK/smol-w4a16 $WORK/smol-w4a16-plain \
         $WORK/smol-w4a16-g32 $WORK/smol-w4a16-g32-plain; do
  echo "== $d $(du -b $d/model.safetensors | cut -f1)"
  $S perplexity --model $d --text-file $WORK/eval.txt
done
/work/.venv/bin/python bench/results/calibrated-quant-cpu-20261207/transformers_ppl.py $WORK/eval.txt $M \
  $WORK/smol-w8a8 $WORK/smol-w8a8-plain $WORK/smol-fp8 $WORK/smol-w4a16 $WORK/smol-w4a16-plain

M=../shared/models/stories260K-hf
CAL=bench/results/calibrated-quant-cpu-20261207/calibration_story.txt
EV=bench/results/kvfp8-cpu-20261207/story.txt
$S quantize --model $M --type w8a8-int8 --calibration $CAL --force --out $WORK/st-w8a8
$S quantize --model $M --type w8a8-int8 --no-smoothing --force --out $WORK/st-w8a8-plain
$S quantize --model $M --type fp8 --force --out $WORK/st-fp8
$S quantize --model $M --type w4a16 --group-size 0 --calibration $CAL --force --out $WORK/st-w4a16
$S quantize --model $M --type w4a16 --group-size 0 --no-smoothing --force --out $WORK/st-w4a16-plain
for d in $M $WORK/st-w8a8 $WORK/st-w8a8-plain $WORK/st-fp8 $WORK/st-w4a16 $WORK/st-w4a16-plain; do
  echo "== $d $(du -b $d/model.safetensors | cut -f1)"
  $S perplexity --model $d --text-file $EV
done
