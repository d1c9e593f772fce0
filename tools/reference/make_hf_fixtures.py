#!/usr/bin/env python3
"""Makes the Hugging Face reference fixtures for strata's logits tests.

For each small random-weight configuration (MHA; GQA with an untied head and Llama-3 RoPE scaling;
Qwen2-style q/k/v biases; Mistral) it builds the model with transformers in float32, saves it as a
Hugging Face directory (config.json + model.safetensors) under tests/fixtures/hf/<name>/, runs one
forward pass over a fixed token sequence and saves the logits of every position as
logits.npy (float32, [T, vocab]) with the ids in ids.json.

Run where torch and transformers are installed:
    python3 tools/reference/make_hf_fixtures.py [--out tests/fixtures/hf]
"""
import argparse
import json
import os

import numpy as np
import torch
import transformers

CONFIGS = {
    # Multi-head attention, tied embeddings, plain Llama RoPE.
    "llama_mha": dict(
        cls="LlamaForCausalLM", model_type="llama", vocab_size=256, hidden_size=64, intermediate_size=160,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True),
    # Grouped-query attention (4 query heads per KV head), untied LM head, Llama-3 frequency scaling.
    "llama_gqa_untied": dict(
        cls="LlamaForCausalLM", model_type="llama", vocab_size=320, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512,
        rms_norm_eps=1e-6, rope_theta=500000.0, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64}),
    # Qwen2: biases on q/k/v, tied head.
    "qwen2_bias": dict(
        cls="Qwen2ForCausalLM", model_type="qwen2", vocab_size=288, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True),
    # Mistral (multi-query: one KV head), untied.
    "mistral_mqa": dict(
        cls="MistralForCausalLM", model_type="mistral", vocab_size=256, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, sliding_window=None),
}


def build(name, spec, seed):
    spec = dict(spec)
    cls = getattr(transformers, spec.pop("cls"))
    model_type = spec.pop("model_type")
    config = transformers.AutoConfig.for_model(model_type, **spec)
    config.bos_token_id, config.eos_token_id = 1, 2
    torch.manual_seed(seed)
    model = cls(config).float().eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))  # random norms catch a missing weight multiply
            elif pname.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.08 * torch.randn_like(p))
    return model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "hf"))
    args = parser.parse_args()
    for i, (name, spec) in enumerate(CONFIGS.items()):
        model = build(name, spec, seed=1234 + i)
        out = os.path.join(args.out, name)
        os.makedirs(out, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        for extra in ("generation_config.json",):
            path = os.path.join(out, extra)
            if os.path.exists(path):
                os.remove(path)
        rng = np.random.default_rng(99 + i)
        ids = [1] + rng.integers(3, spec["vocab_size"], size=40).tolist()
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float().numpy()
        np.save(os.path.join(out, "logits.npy"), logits.astype(np.float32))
        greedy = model.generate(torch.tensor([ids[:8]]), max_new_tokens=12, do_sample=False,
                                pad_token_id=0, eos_token_id=None)[0, 8:].tolist()
        with open(os.path.join(out, "ids.json"), "w") as f:
            json.dump({"ids": ids, "greedy_prompt": ids[:8], "greedy_continuation": greedy,
                       "transformers": transformers.__version__, "torch": torch.__version__}, f, indent=1)
        print(f"{name}: {sum(p.numel() for p in model.parameters())} params, logits {logits.shape}, "
              f"range [{logits.min():.2f}, {logits.max():.2f}]")


if __name__ == "__main__":
    main()
