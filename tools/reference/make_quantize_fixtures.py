#!/usr/bin/env python3
"""Fixture for `strata quantize` (tests/fixtures/quantize/reference.txt): what the `gguf` package and
llama.cpp's llama-quantize make of the same f32 source, per type and tensor.

Needs: numpy, gguf (pip install gguf numpy; tested with gguf 0.19.0), a built strata, and optionally a
built llama-quantize (llama.cpp; scripts/bench-quant.sh says how to build one). No network.

    python tools/reference/make_quantize_fixtures.py --strata build/strata \
        [--llama-quantize /path/to/llama-quantize] [--out tests/fixtures/quantize]

The source is `strata make-model --preset tiny --hidden 256 --layers 8 --heads 2 --kv-heads 1 --ffn 288
--seed 7 --format gguf --dtype f32` (3.6M parameters: rows of 256 for the K-quants, ffn_down rows of 288
that are not, 8 layers for llama-quantize's layer rule). The mixes whose attn_v rule depends on the number of
query heads per key/value head (q2_k, iq4_nl, iq4_xs: more bits at 4 or more) are also made from a second
source with --heads 4 (head_dim 64, 4 query heads per kv head), written as type "q2_k@gqa4". For every type
it writes one line per tensor:

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
import re
import subprocess
import tempfile

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, quants

TYPES = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k", "q4_k_m", "q5_k_m",
         "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "iq4_nl", "iq4_xs"]
GQA4_TYPES = ["q2_k", "iq4_nl", "iq4_xs"]
LLAMA_NAMES = {}  # strata's type names are llama-quantize's (Q4_K = Q4_K_M, Q5_K = Q5_K_M, Q3_K = Q3_K_M)
GGUF_QUANTIZABLE = {T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0}
SOURCE_FLAGS = ["--preset", "tiny", "--hidden", "256", "--layers", "8", "--heads", "2", "--kv-heads", "1",
                "--ffn", "288", "--seed", "7", "--format", "gguf", "--dtype", "f32"]
MIX80_FLAGS = ["--preset", "70b-shape", "--hidden", "256", "--ffn", "256", "--heads", "4", "--kv-heads", "1",
               "--vocab", "512", "--format", "gguf", "--dtype", "f16"]
GQA4_FLAGS = list(SOURCE_FLAGS)
GQA4_FLAGS[GQA4_FLAGS.index("--heads") + 1] = "4"


def dry_run_types(llama_quantize, src, llama_name):
    """tensor -> type (lower case) of the matrices llama-quantize --dry-run would quantize."""
    run = subprocess.run([llama_quantize, "--dry-run", src, llama_name, "1"], check=True, capture_output=True,
                         text=True)
    out = {}
    for line in (run.stdout + run.stderr).splitlines():
        m = re.match(r"\[\s*\d+/\s*\d+\]\s+(\S+)\s+-.*->.*\((\w+)\)\s*$", line)
        if m:
            out[m.group(1)] = m.group(2).lower()
    return out


def mix_lines(types):
    by_kind = {}
    for tensor, t in types.items():
        m = re.match(r"blk\.(\d+)\.(\w+)\.weight$", tensor)
        kind, layer = (m.group(2), int(m.group(1))) if m else (tensor.removesuffix(".weight"), 0)
        by_kind.setdefault(kind, {})[layer] = t
    return {kind: [v[i] for i in sorted(v)] for kind, v in by_kind.items()}


def file_type(path):
    field = GGUFReader(path).fields["general.file_type"]
    return int(field.parts[field.data[0]][0])


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
    file_types = []
    with tempfile.TemporaryDirectory() as tmp:
        for source_name, flags, types in (("", SOURCE_FLAGS, TYPES), ("@gqa4", GQA4_FLAGS, GQA4_TYPES)):
            src = os.path.join(tmp, f"src{source_name}.gguf")
            subprocess.run([args.strata, "make-model", *flags, "--out", src], check=True, capture_output=True)
            source = tensors(src)
            for name in types:
                key = name + source_name
                ours = os.path.join(tmp, f"strata-{key}.gguf")
                subprocess.run([args.strata, "quantize", "--model", src, "--type", name, "--out", ours, "--threads", "1"],
                               check=True, capture_output=True)
                strata = tensors(ours)
                llama = None
                if args.llama_quantize:
                    theirs = os.path.join(tmp, f"llama-{key}.gguf")
                    subprocess.run([args.llama_quantize, src, theirs, LLAMA_NAMES.get(name, name.upper()), "1"],
                                   check=True, capture_output=True)
                    llama = tensors(theirs)
                    if not source_name:
                        file_types.append(f"{name} {file_type(theirs)}")
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
                    lines.append(f"{key} {tname} {l_type} {l_err} {g_err} {checksum(s_vals)}")
    with open(os.path.join(args.out, "reference.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote", os.path.join(args.out, "reference.txt"), len(lines) - 1, "lines")
    if args.llama_quantize:
        mix = ["# type kind types of layers 0..79: llama-quantize --dry-run on an 80-layer source "
               "(tools/reference/make_quantize_fixtures.py)"]
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "src80.gguf")
            subprocess.run([args.strata, "make-model", *MIX80_FLAGS, "--out", src], check=True, capture_output=True)
            for name in TYPES:
                kinds = mix_lines(dry_run_types(args.llama_quantize, src, LLAMA_NAMES.get(name, name.upper())))
                for kind in sorted(kinds):
                    mix.append(f"{name} {kind} {' '.join(kinds[kind])}")
        with open(os.path.join(args.out, "mix_80_layers.txt"), "w") as f:
            f.write("\n".join(mix) + "\n")
    if file_types:
        with open(os.path.join(args.out, "file_types.txt"), "w") as f:
            f.write("# type general.file_type of llama-quantize's file (tools/reference/make_quantize_fixtures.py)\n")
            f.write("\n".join(file_types) + "\n")


if __name__ == "__main__":
    main()
