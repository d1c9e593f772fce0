#!/usr/bin/env python3
"""Greedy continuation of a GGUF model by Hugging Face transformers (which dequantizes the GGUF's blocks
with the gguf package and runs in f32) beside strata's, with the top-2 logit margin at every step, so a
difference can be told apart from numerical noise. Needs torch, transformers, gguf.

    python3 tools/reference/compare_gguf_greedy.py MODEL.gguf "Once upon a time" 48 build/strata
"""
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    path, prompt, n, strata = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    folder, name = path.rsplit("/", 1) if "/" in path else (".", path)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32).eval()
    ids = tok(prompt, return_tensors="pt").input_ids
    prompt_ids = ids[0].tolist()
    margins = []
    with torch.no_grad():
        for _ in range(n):
            logits = model(ids).logits[0, -1]
            top = torch.topk(logits, 2)
            margins.append(float(top.values[0] - top.values[1]))
            ids = torch.cat([ids, top.indices[:1].view(1, 1)], dim=1)
    hf = ids[0].tolist()[len(prompt_ids):]
    out = subprocess.run([strata, "generate", "--model", path, "--prompt-ids", " ".join(map(str, prompt_ids)),
                          "-n", str(n), "--print-ids", "--quiet", "--ignore-eos"], capture_output=True, text=True)
    line = [l for l in out.stdout.splitlines() if l.startswith("ids:")]
    ours = [int(x) for x in line[0][4:].split()] if line else []
    print("prompt ids :", prompt_ids)
    print("transformers:", hf)
    print("strata      :", ours)
    first = next((i for i, (a, b) in enumerate(zip(hf, ours)) if a != b), None)
    if first is None and len(ours) == len(hf):
        print(f"equal for all {n} tokens; smallest top-2 margin {min(margins):.4f}")
    else:
        print(f"first difference at step {first}: top-2 margin there {margins[first]:.4f} "
              f"(smallest before it {min(margins[:first] or [float('nan')]):.4f})")
    print("text (transformers):", repr(tok.decode(hf)))


if __name__ == "__main__":
    main()
