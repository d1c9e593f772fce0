#!/usr/bin/env python3
"""Fixture for `strata quantize` (tests/fixtures/quantize/reference.txt): what the `gguf` package and
llama.cpp's llama-quantize make of the same f32 source, per type and tensor.

Needs: numpy, gguf (pip install gguf numpy; tested with gguf 0.19.0), a built strata, and optionally a
built llama-quantize (llama.cpp; scripts/bench-quant.sh says how to build one). No network.

    python tools/reference/make_quantize_fixtures.py --strata build/strata \
        [--llama-quantize /path/to/llama-quantize] [--out tests/fixtures/quantize]

The source is `strata make-model --preset tiny --hidden 256 --layers 8 --heads 2 --kv-heads 1 --ffn 288
--seed 7 --format gguf --dtype f32` (3.6M parameters: rows of 256 for the K-quants, ffn_down rows of 288
that are not, 8 layers for llama-quantize's layer rule). For every type it writes one line per tensor:

  type tensor llama_type llama_sq_err gguf_sq_err strata_checksum

llama_type / llama_sq_err: the tensor's type in llama-quantize's output and the sum of squared differences
between its dequantization (gguf.quants.dequantize) and the f32 source ("-" without --llama-quantize).
gguf_sq_err: the same for gguf.quants.quantize of the source tensor at the type strata chose, where the
package can quantize that type (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), else "-".
strata_checksum: gguf.quants.dequantize of strata's output tensor, as float32 bits b_i in row-major order,
checksummed as sum_i b_i * (2 i + 1) mod 2^64 (an odd multiplier per position: any one changed float changes
it). The file is small (a few KB); regenerate it when the quantizers change on purpose.
"""
import argparse
import os
import subprocess
import tempfile

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, quants

TYPES = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k", "q4_k_m", "q5_k_m"]
LLAMA_NAMES = {"q4_k": "Q4_K_S", "q5_k": "Q5_K_S"}
GGUF_QUANTIZABLE = {T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0}
SOURCE_FLAGS = ["--preset", "tiny", "--hidden", "256", "--layers", "8", "--heads", "2", "--kv-heads", "1",
                "--ffn", "288", "--seed", "7", "--format", "gguf", "--dtype", "f32"]


def tensors(path):
    out = {}
    for t in GGUFReader(path).tensors:
        if t.tensor_type in (T.F32, T.F16, T.BF16):
            data = np.asarray(t.data, dtype=np.float32)
        else:
            data = quants.dequantize(np.asarray(t.data), t.tensor_type)
        out[t.name] = (t.tensor_type, data.astype(np.float32).reshape(-1), int(t.shape[0]))  # shape[0]: ne0, the row
    return out


def checksum(values):
    bits = values.view(np.uint32).astype(np.uint64)
    weights = 2 * np.arange(bits.size, dtype=np.uint64) + np.uint64(1)
    with np.errstate(over="ignore"):
        return int((bits * weights).sum(dtype=np.uint64))


def sq_err(a, b):
    d = a.astype(np.float64) - b.astype(np.float64)
    return float(np.dot(d, d))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--strata", required=True)
    ap.add_argument("--llama-quantize")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "../../tests/fixtures/quantize"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    lines = ["# type tensor llama_type llama_sq_err gguf_sq_err strata_checksum (tools/reference/make_quantize_fixtures.py)"]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src.gguf")
        subprocess.run([args.strata, "make-model", *SOURCE_FLAGS, "--out", src], check=True, capture_output=True)
        source = tensors(src)
        for name in TYPES:
            ours = os.path.join(tmp, f"strata-{name}.gguf")
            subprocess.run([args.strata, "quantize", "--model", src, "--type", name, "--out", ours, "--threads", "1"],
                           check=True, capture_output=True)
            strata = tensors(ours)
            llama = None
            if args.llama_quantize:
                theirs = os.path.join(tmp, f"llama-{name}.gguf")
                subprocess.run([args.llama_quantize, src, theirs, LLAMA_NAMES.get(name, name.upper()), "1"],
                               check=True, capture_output=True)
                llama = tensors(theirs)
            for tname, (_, x, cols) in source.items():
                s_type, s_vals, _ = strata[tname]
                assert s_vals.size == x.size, tname
                l_type, l_err = "-", "-"
                if llama is not None:
                    l_type = llama[tname][0].name.lower()
                    l_err = repr(sq_err(llama[tname][1], x))
                g_err = "-"
                if s_type in GGUF_QUANTIZABLE:
                    q = quants.quantize(x.reshape(-1, cols), s_type)
                    g_err = repr(sq_err(quants.dequantize(q, s_type).reshape(-1), x))
                lines.append(f"{name} {tname} {l_type} {l_err} {g_err} {checksum(s_vals)}")
    with open(os.path.join(args.out, "reference.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote", os.path.join(args.out, "reference.txt"), len(lines) - 1, "lines")


if __name__ == "__main__":
    main()
