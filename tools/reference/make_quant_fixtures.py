#!/usr/bin/env python3
"""Fixtures for strata's GGUF block-quantized types (tests/fixtures/gguf_quants/), made with the `gguf`
package's reference quantizers and dequantizers (gguf.quants), which mirror ggml's C code.

Needs: numpy and gguf (pip install gguf numpy; tested with gguf 0.19.0, numpy 2.4). No network.

    python tools/reference/make_quant_fixtures.py [--out tests/fixtures/gguf_quants]

For each type it writes
  <type>.blocks  random but valid blocks: random bytes, with every f16 scale field replaced by a finite f16
                 (magnitudes from 1e-7, subnormal in f16, to 4; one block's scales are zero)
  <type>.f32     gguf.quants.dequantize of those bytes (little-endian float32)
and for the types gguf can quantize (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)
  <type>.quant   gguf.quants.quantize of quant_input.f32
plus quant_input.f32: 2048 floats (normal, with a few blocks of constant, tiny and one-sided values).
Everything is deterministic (seeded) and small (about 60 KB).
"""
import argparse
import os

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES

# type -> byte offsets of its f16 fields within a block (ggml's block layouts).
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0], T.IQ4_NL: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208], T.IQ4_XS: [0],
}
QUANTIZABLE = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]


def random_blocks(rng, qtype, n_blocks):
    block, size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        sign = rng.choice([-1.0, 1.0], size=n_blocks)
        mag = 10.0 ** rng.uniform(-7, 0.6, size=n_blocks)
        vals = (sign * mag).astype(np.float16)
        vals[0] = 0  # one block with zero scales
        assert np.all(np.isfinite(vals))
        raw[:, off:off + 2] = vals.view(np.uint8).reshape(n_blocks, 2)
    return raw


def quant_input(rng):
    x = rng.standard_normal(2048).astype(np.float32)
    x[0:32] = 0.5             # constant block
    x[32:64] *= 1e-6          # tiny values
    x[64:96] = np.abs(x[64:96])  # one-sided
    x[256:512] *= 8.0         # a loud super-block
    return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "../../tests/fixtures/gguf_quants"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(20261207)
    for qtype in F16_FIELDS:
        block, _ = GGML_QUANT_SIZES[qtype]
        n_blocks = 16 if block == 32 else 6
        raw = random_blocks(rng, qtype, n_blocks)
        deq = quants.dequantize(raw.reshape(1, -1), qtype).astype("<f4").reshape(-1)
        assert deq.size == n_blocks * block and np.all(np.isfinite(deq)), qtype.name
        name = qtype.name.lower()
        raw.tofile(os.path.join(args.out, f"{name}.blocks"))
        deq.tofile(os.path.join(args.out, f"{name}.f32"))
    x = quant_input(rng)
    x.astype("<f4").tofile(os.path.join(args.out, "quant_input.f32"))
    for qtype in QUANTIZABLE:
        q = quants.quantize(x.reshape(1, -1), qtype)
        q.tofile(os.path.join(args.out, f"{qtype.name.lower()}.quant"))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
