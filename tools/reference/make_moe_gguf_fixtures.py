#!/usr/bin/env python3
"""Converts the Hugging Face MoE fixtures (tests/fixtures/hf/*_moe) to GGUF with llama.cpp's own converter.

llama.cpp's convert_hf_to_gguf.py (shipped in the llama-cpp-python source distribution on PyPI) writes the
files; this script only runs it, with two adjustments that change no tensor data:
  - the fixtures have no tokenizer, so the converter's set_vocab is skipped (the GGUF has no
    tokenizer.ggml.* keys; strata then takes token ids only, which is all the tests use);
  - the Qwen fixtures have dense layers (Qwen2-MoE's mlp_only_layers = [1], Qwen3-MoE's
    decoder_sparse_step = 2), which llama.cpp's qwen2moe/qwen3moe tensor lists lack: the dense MLP's
    ffn_gate/ffn_up/ffn_down are added to those lists so the converter names them as it names every
    other architecture's (blk.N.ffn_gate.weight ...). strata tells the sparse layers by their router.

Writes, under tests/fixtures/gguf_moe/:
  mixtral_moe-f32.gguf       --outtype f32: its logits must equal the HF fixture's (logits.npy, ids.json)
  {qwen2,qwen3}_moe-f16.gguf --outtype f16 (norms and routers stay f32)
  <name>-q8_0.gguf           --outtype q8_0: experts and attention in Q8_0 (rows whose width is not a
                             multiple of 32 the converter keeps in f16), norms and routers f32
  <file>.npy, <file>.json    for the f16 and q8_0 files: transformers' logits of the HF fixture's ids and
                             its greedy continuation of greedy_prompt, with every weight dequantized from
                             the GGUF by the gguf package (gguf.quants.dequantize) and loaded into the HF
                             model of config.json (the reference for what the file holds)

Needs torch, transformers (>= 5), numpy, safetensors and the llama.cpp sources:
    pip download --no-binary :all: --no-deps llama-cpp-python && tar xzf llama_cpp_python-*.tar.gz
    python3 tools/reference/make_moe_gguf_fixtures.py \
        --llama-cpp llama_cpp_python-0.3.36/vendor/llama.cpp [--out tests/fixtures/gguf_moe]
(written against llama-cpp-python 0.3.36.)
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

# Float outtype per model (f16 halves the committed bytes; Mixtral's f32 file is checked against the HF
# fixture's own logits), then q8_0 for each.
OUTTYPES = {"mixtral_moe": ["f32", "q8_0"], "qwen2_moe": ["f16", "q8_0"], "qwen3_moe": ["f16", "q8_0"]}
HERE = os.path.dirname(os.path.abspath(__file__))
HF_DIR = os.path.join(HERE, "..", "..", "tests", "fixtures", "hf")

# Runs inside the converter's process: the two adjustments above, then its main().
SHIM = r"""
import sys
sys.path.insert(0, {llama!r})
sys.path.insert(1, {llama!r} + '/gguf-py')
import gguf
from gguf.constants import MODEL_ARCH, MODEL_TENSOR, MODEL_TENSORS
for arch in (MODEL_ARCH.QWEN2MOE, MODEL_ARCH.QWEN3MOE):
    for t in (MODEL_TENSOR.FFN_GATE, MODEL_TENSOR.FFN_UP, MODEL_TENSOR.FFN_DOWN):
        if t not in MODEL_TENSORS[arch]:
            MODEL_TENSORS[arch].append(t)
import conversion
_get_model_class = conversion.get_model_class
def get_model_class(*a, **k):
    cls = _get_model_class(*a, **k)
    cls.set_vocab = lambda self: None
    return cls
conversion.get_model_class = get_model_class
sys.argv = ['convert_hf_to_gguf.py'] + {args!r}
import runpy
runpy.run_path({llama!r} + '/convert_hf_to_gguf.py', run_name='__main__')
"""


def convert(llama, src, out, outtype):
    code = SHIM.format(llama=os.path.abspath(llama), args=[src, "--outtype", outtype, "--outfile", out])
    env = dict(os.environ, NO_LOCAL_GGUF="1")  # the shim put the sources' gguf-py first already
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def dequantized_logits(llama, gguf_path, hf_dir):
    sys.path.insert(0, os.path.join(os.path.abspath(llama), "gguf-py"))
    import gguf
    import torch
    import transformers
    from gguf.quants import dequantize
    from safetensors.numpy import load_file, save_file

    from gguf.constants import MODEL_ARCH, MODEL_TENSOR, MODEL_TENSORS
    for arch in (MODEL_ARCH.QWEN2MOE, MODEL_ARCH.QWEN3MOE):  # the dense layers, as in SHIM
        for t in (MODEL_TENSOR.FFN_GATE, MODEL_TENSOR.FFN_UP, MODEL_TENSOR.FFN_DOWN):
            if t not in MODEL_TENSORS[arch]:
                MODEL_TENSORS[arch].append(t)
    reader = gguf.GGUFReader(gguf_path)
    gguf_tensors = {}
    for t in reader.tensors:
        shape = [int(x) for x in reversed(t.shape)]  # GGUF lists ne0 first
        gguf_tensors[t.name] = dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
    hf = load_file(os.path.join(hf_dir, "model.safetensors"))
    config = transformers.AutoConfig.from_pretrained(hf_dir)
    # Map each HF tensor to its GGUF counterpart by matching values' shapes in a name table built from
    # the converter's own mapping (gguf.get_tensor_name_map), experts from the stacked tensors.
    arch = {"mixtral": gguf.MODEL_ARCH.LLAMA, "qwen2_moe": gguf.MODEL_ARCH.QWEN2MOE,
            "qwen3_moe": gguf.MODEL_ARCH.QWEN3MOE}[config.model_type]
    n_layers = config.num_hidden_layers
    name_map = gguf.get_tensor_name_map(arch, n_layers)
    state = {}
    for name, value in hf.items():
        parts = name.split(".")
        if "experts" in parts and parts[parts.index("experts") + 1].isdigit():
            i = parts.index("experts")
            expert = int(parts[i + 1])
            merged = ".".join(parts[:i + 1] + parts[i + 2:])
            stacked = gguf_tensors[name_map.get_name(merged, try_suffixes=(".weight",))]
            w = stacked[expert]
        else:
            w = gguf_tensors[name_map.get_name(name, try_suffixes=(".weight", ".bias"))]
        if config.model_type == "mixtral" and (name.endswith("q_proj.weight") or name.endswith("k_proj.weight")):
            heads = config.num_attention_heads if "q_proj" in name else config.num_key_value_heads
            w = unpermute(w, heads)  # the converter permuted q/k rows to llama.cpp's adjacent RoPE pairs
        assert w.shape == value.shape, (name, w.shape, value.shape)
        state[name] = torch.from_numpy(np.ascontiguousarray(w))
    # from_pretrained, so transformers converts the checkpoint's per-expert names to its own layout.
    with tempfile.TemporaryDirectory() as tmp:
        save_file({k: v.numpy() for k, v in state.items()}, os.path.join(tmp, "model.safetensors"))
        shutil.copy(os.path.join(hf_dir, "config.json"), tmp)
        model = transformers.AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
    fixture = json.load(open(os.path.join(hf_dir, "ids.json")))
    with torch.no_grad():
        logits = model(torch.tensor([fixture["ids"]])).logits[0].float().numpy()
        prompt = torch.tensor([fixture["greedy_prompt"]])
        n = len(fixture["greedy_continuation"])
        out = model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                             pad_token_id=0)
    return logits, [int(t) for t in out[0, prompt.shape[1]:]]


def unpermute(w, heads):
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-cpp", required=True, help="llama.cpp source folder (has convert_hf_to_gguf.py)")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "tests", "fixtures", "gguf_moe"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, outtypes in OUTTYPES.items():
        src = os.path.join(HF_DIR, name)
        for outtype in outtypes:
            out = os.path.join(args.out, f"{name}-{outtype}.gguf")
            convert(args.llama_cpp, src, out, outtype)
            logits, greedy = dequantized_logits(args.llama_cpp, out, src)
            if outtype == "f32":  # the HF fixture is the reference; the round trip must be exact
                hf = np.load(os.path.join(src, "logits.npy"))
                assert np.abs(logits - hf).max() < 1e-5, np.abs(logits - hf).max()
                continue
            np.save(out[:-len(".gguf")] + ".npy", logits)
            with open(out[:-len(".gguf")] + ".json", "w") as f:
                json.dump({"greedy_continuation": greedy}, f)


if __name__ == "__main__":
    main()
