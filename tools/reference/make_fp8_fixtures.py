#!/usr/bin/env python3
"""Fixtures for the FP8 (e4m3) KV cache codec (runtime/fp8_kv.h), from PyTorch's float8_e4m3fn.

Needs: torch (>= 2.1, for torch.float8_e4m3fn), numpy.
Writes tests/fixtures/fp8/:
  e4m3_codes.npy     [256] f32: the value of every code (torch's decoding); NaN for 0x7f and 0xff.
  e4m3_rounding.npy  [N, 2] f32: (x, torch's e4m3 rounding of x) for x in (-448, 448): random values over
                     every binade from 2^-12 to 2^8, and the exact midpoints between neighbouring codes
                     (ties, which round to the even code).
"""
import os

import numpy as np
import torch

out = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "fp8")
os.makedirs(out, exist_ok=True)

codes = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn).to(torch.float32).numpy()
np.save(os.path.join(out, "e4m3_codes.npy"), codes.astype(np.float32))

rng = np.random.default_rng(20261207)
exponents = rng.uniform(-12, np.log2(448), size=3000)
random = (np.exp2(exponents) * rng.choice([-1, 1], size=exponents.size)).astype(np.float32)
finite = np.sort(codes[np.isfinite(codes) & (codes >= 0)])
ties = ((finite[:-1].astype(np.float64) + finite[1:]) / 2).astype(np.float32)  # exact in f32
ties = np.concatenate([ties, -ties])
x = np.concatenate([random, ties, np.float32([0.0, -0.0, 448.0, -448.0])]).astype(np.float32)
rounded = torch.from_numpy(x).to(torch.float8_e4m3fn).to(torch.float32).numpy()
assert np.all(np.isfinite(rounded))
np.save(os.path.join(out, "e4m3_rounding.npy"), np.stack([x, rounded], axis=1).astype(np.float32))
print("wrote", out, len(x), "rounding cases")
