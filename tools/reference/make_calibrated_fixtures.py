#!/usr/bin/env python3
"""Fixtures for tests/runtime/formats/calibrated_quantize_test.cpp: checkpoints that `strata quantize` writes in
compressed-tensors format, decompressed by the compressed-tensors library itself (llm-compressor's format
code), so the test checks strata's reading of its own files against the library's.

tests/fixtures/calibrated/
  calibration.txt        the calibration text (committed; this script does not write it)
  w8a8_int8/, w4a16_g32/ strata quantize outputs of a 1-layer random model (make-model, seed 3), committed
  reference.txt          per checkpoint and linear layer: the checksum of the library's decompressed f32
                         weight (sum over i of bits(w[i]) * (2i + 1) mod 2^64, the quantize_test checksum)
  transformers_logits.txt per checkpoint: the last position's logits of PROMPT from transformers'
                         AutoModelForCausalLM, which loads the directory through compressed-tensors
The fp8 checkpoint (no calibration, so the test can rebuild it bit for bit) is made in a temporary directory
and only its checksums are kept.

Needs: torch, safetensors, transformers, compressed-tensors (pip install compressed-tensors; CPU is enough)
and a built strata binary.
Usage: make_calibrated_fixtures.py --strata build/strata [--out tests/fixtures/calibrated]
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np
import torch
from compressed_tensors.compressors import BaseCompressor
from compressed_tensors.quantization import QuantizationConfig
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

# make-model shapes: 1 layer, 2 heads (1 KV head), f16. FP8 needs rows of 128 for strata's f8_e4m3_b128.
SMALL = ["--preset", "tiny", "--hidden", "64", "--layers", "1", "--heads", "2", "--kv-heads", "1", "--ffn", "64",
         "--vocab", "260", "--seed", "3", "--dtype", "f16"]
WIDE = ["--preset", "tiny", "--hidden", "128", "--layers", "1", "--heads", "2", "--kv-heads", "1", "--ffn", "128",
        "--vocab", "260", "--seed", "3", "--dtype", "f16"]
# name -> (make-model shape, strata quantize flags, committed?)
CHECKPOINTS = {
    "w8a8_int8": (SMALL, ["--type", "w8a8-int8", "--calibration", "CAL"], True),
    "w4a16_g32": (SMALL, ["--type", "w4a16", "--group-size", "32", "--calibration", "CAL"], True),
    "fp8": (WIDE, ["--type", "fp8"], False),
}


PROMPT = [1, 17, 29, 5, 88, 41, 7, 200]


def transformers_logits(directory):
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor([PROMPT])).logits[0, -1].tolist()


def checksum(w):
    bits = np.ascontiguousarray(w, dtype=np.float32).reshape(-1).view(np.uint32).astype(np.uint64)
    odd = (2 * np.arange(bits.size, dtype=np.uint64) + 1)
    with np.errstate(over="ignore"):
        return int(np.sum(bits * odd, dtype=np.uint64))


def decompress(directory):
    """{weight name: f32 numpy array} for every quantized linear layer, through compressed-tensors."""
    with open(os.path.join(directory, "config.json")) as f:
        qc = QuantizationConfig.model_validate(json.load(f)["quantization_config"])
    (scheme,) = qc.config_groups.values()
    compressor = BaseCompressor.get_value_from_registry(qc.format)
    tensors = load_file(os.path.join(directory, "model.safetensors"))
    prefixes = sorted({k.rsplit(".", 1)[0] for k in tensors if k.endswith((".weight_scale"))})
    out = {}
    for p in prefixes:
        local = {k[len(p) + 1:]: v for k, v in tensors.items() if k.startswith(p + ".") and "." not in k[len(p) + 1:]}
        local.pop("input_scale", None)
        weight = compressor.decompress(local, scheme)["weight"]
        out[p + ".weight"] = weight.to(torch.float32).numpy()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strata", required=True)
    ap.add_argument("--out", default="tests/fixtures/calibrated")
    a = ap.parse_args()
    strata = os.path.abspath(a.strata)
    cal = os.path.abspath(os.path.join(a.out, "calibration.txt"))
    lines = ["# checkpoint  weight  checksum of compressed-tensors' decompressed f32 weight"]
    logit_lines = [f"# checkpoint  transformers' last-position logits (float32) for the ids {' '.join(map(str, PROMPT))}"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, (shape, flags, committed) in CHECKPOINTS.items():
            src = os.path.join(tmp, "src_" + name)
            subprocess.run([strata, "make-model", *shape, "--out", src], check=True)
            dst = os.path.join(a.out, name) if committed else os.path.join(tmp, name)
            shutil.rmtree(dst, ignore_errors=True)
            subprocess.run([strata, "quantize", "--model", src, "--out", dst, "--threads", "1",
                            *[cal if f == "CAL" else f for f in flags]], check=True)
            for weight, w in sorted(decompress(dst).items()):
                lines.append(f"{name} {weight} {checksum(w)}")
            logit_lines.append(name + " " + " ".join(f"{v:.9g}" for v in transformers_logits(dst)))
    with open(os.path.join(a.out, "reference.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(a.out, "transformers_logits.txt"), "w") as f:
        f.write("\n".join(logit_lines) + "\n")
    print("wrote", os.path.join(a.out, "reference.txt"), len(lines) - 1, "weights, and transformers_logits.txt")


if __name__ == "__main__":
    main()
