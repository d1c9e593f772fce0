#!/usr/bin/env python3
"""Perplexity of Hugging Face directories (strata quantize's compressed-tensors outputs included) with
transformers, one window over the whole text, as `strata perplexity` scores it: the transformers column of
README.md. Needs torch, transformers and compressed-tensors (CPU).
Usage: transformers_ppl.py TEXT DIR...
"""
import math
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

text = open(sys.argv[1]).read()
for d in sys.argv[2:]:
    tok = AutoTokenizer.from_pretrained(d)
    ids = tok(text, return_tensors="pt").input_ids
    if ids[0, 0] != tok.bos_token_id:  # strata's perplexity starts with BOS
        ids = torch.cat([torch.tensor([[tok.bos_token_id]]), ids], dim=1)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    with torch.no_grad():
        logits = model(ids).logits[0, :-1]
    nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:])
    print(d, "tokens", ids.shape[1] - 1, "perplexity %.4f" % math.exp(nll.item()))
