#!/usr/bin/env python3
"""A Llama-family GGUF model to a Hugging Face directory (f16 safetensors, config.json, tokenizer files), for
the sources `strata quantize --type w8a8-int8|fp8|w4a16` reads. The gguf package dequantizes each tensor;
q/k rows go back from llama.cpp's adjacent-pair RoPE layout to Hugging Face's rotate-half one; transformers
writes config.json and the tokenizer from the GGUF metadata.

Needs: numpy, gguf, safetensors, torch, transformers (CPU).
Usage: gguf_to_hf.py MODEL.gguf OUT_DIR [--dtype float16|bfloat16|float32]
"""
import argparse
import os
import re

import numpy as np
import torch
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.torch import save_file
from transformers import AutoConfig, AutoTokenizer

NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}


def hf_name(name):
    if name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if name == "output_norm.weight":
        return "model.norm.weight"
    if name == "output.weight":
        return "lm_head.weight"
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", name)
    if m and m.group(2) in NAMES:
        return f"model.layers.{m.group(1)}.{NAMES[m.group(2)]}.{m.group(3)}"
    return None


def unpermute(w, heads):  # inverse of llama.cpp's reshape(heads, 2, d/2, ...).swapaxes(1, 2)
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf")
    ap.add_argument("out")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    a = ap.parse_args()
    folder, name = os.path.split(os.path.abspath(a.gguf))
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    config.dtype = a.dtype
    reader = GGUFReader(a.gguf)
    tensors = {}
    for t in reader.tensors:
        hf = hf_name(t.name)
        if hf is None:
            print("skipped", t.name)
            continue
        w = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(list(reversed(t.shape.tolist())))
        if ".q_proj." in hf:
            w = unpermute(w, config.num_attention_heads)
        elif ".k_proj." in hf:
            w = unpermute(w, config.num_key_value_heads)
        tensors[hf] = torch.from_numpy(np.ascontiguousarray(w)).to(getattr(torch, a.dtype))
    os.makedirs(a.out, exist_ok=True)
    save_file(tensors, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(a.out)
    AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(a.out)
    print("wrote", a.out, len(tensors), "tensors")


if __name__ == "__main__":
    main()
