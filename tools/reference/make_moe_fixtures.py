#!/usr/bin/env python3
"""Makes the Hugging Face mixture-of-experts fixtures for strata's MoE logits tests.

Three tiny random-weight models in float32, built by transformers:
  - mixtral_moe:  Mixtral, 8 experts, top-2 (softmax over all router logits, top-k, renormalized),
  - qwen2_moe:    Qwen2-MoE, 8 experts, top-2 without renormalization, the sigmoid-gated shared expert,
                  q/k/v biases, and a dense MLP on layer 1 (mlp_only_layers = [1]),
  - qwen3_moe:    Qwen3-MoE, 16 fine-grained experts, top-4 with norm_topk_prob, q/k RMSNorms per head,
                  and decoder_sparse_step = 2 over 4 layers (layers 1 and 3 sparse, 0 and 2 dense).
Each is saved with save_pretrained (config.json + model.safetensors, the per-expert tensor names of the
published checkpoints) under tests/fixtures/hf/<name>/, with the logits of every position of a fixed
token sequence (logits.npy, float32 [T, vocab]) and transformers' greedy continuation of its first
8 tokens (ids.json).

Random routers can put two experts' probabilities within rounding of each other, where an f32
implementation may pick the other one; the script records every router decision (the prompt and the
greedy run) and re-seeds until the greedy continuation has at least 4 distinct tokens and the k-th and
(k+1)-th probabilities differ by at least 1e-4 everywhere (f32 rounding moves them by about 1e-6).

Needs torch and transformers (>= 5; written against 5.25):
    python3 tools/reference/make_moe_fixtures.py [--out tests/fixtures/hf]
"""
import argparse
import json
import os

import numpy as np
import torch
import transformers

COMMON = dict(vocab_size=256, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
              max_position_embeddings=256, bos_token_id=1, eos_token_id=2)

CONFIGS = {
    "mixtral_moe": dict(
        cls="MixtralForCausalLM", model_type="mixtral", num_hidden_layers=2, intermediate_size=24,
        num_local_experts=8, num_experts_per_tok=2, rms_norm_eps=1e-5, rope_theta=1000000.0,
        sliding_window=None, tie_word_embeddings=False),
    "qwen2_moe": dict(
        cls="Qwen2MoeForCausalLM", model_type="qwen2_moe", num_hidden_layers=3, intermediate_size=48,
        moe_intermediate_size=16, shared_expert_intermediate_size=32, num_experts=8, num_experts_per_tok=2,
        norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[1], rms_norm_eps=1e-6,
        rope_theta=1000000.0, use_sliding_window=False, tie_word_embeddings=False),
    "qwen3_moe": dict(
        cls="Qwen3MoeForCausalLM", model_type="qwen3_moe", num_hidden_layers=4, intermediate_size=40,
        moe_intermediate_size=8, num_experts=16, num_experts_per_tok=4, norm_topk_prob=True,
        decoder_sparse_step=2, mlp_only_layers=[], rms_norm_eps=1e-6, rope_theta=1000000.0,
        use_sliding_window=False, tie_word_embeddings=False),
}

PROMPT_LEN = 24
GREEDY_PROMPT = 8
GREEDY_NEW = 12
MIN_MARGIN = 1e-4


def build(spec, seed):
    spec = dict(spec)
    cls = getattr(transformers, spec.pop("cls"))
    config = transformers.AutoConfig.for_model(spec.pop("model_type"), **COMMON, **spec)
    torch.manual_seed(seed)
    model = cls(config).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))  # random norms catch a missing weight multiply
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif name.endswith("gate.weight") and "shared_expert" not in name:
                p.copy_(0.5 * torch.randn_like(p))  # routers: spread the probabilities
            else:
                p.copy_(0.1 * torch.randn_like(p))
    return model


def routers(model):
    """The router modules (each returns its logits first), in layer order."""
    return [m for name, m in model.named_modules() if name.endswith("mlp.gate") and hasattr(m, "top_k")]


def smallest_margin(model, run):
    """Runs run() and returns the smallest gap between the k-th and (k+1)-th router probability seen."""
    margins = []

    def hook(module, _inputs, output):
        probs = torch.softmax(output[0].float(), dim=-1)
        top = torch.topk(probs, module.top_k + 1, dim=-1).values
        margins.append((top[:, module.top_k - 1] - top[:, module.top_k]).min().item())

    handles = [m.register_forward_hook(hook) for m in routers(model)]
    try:
        result = run()
    finally:
        for h in handles:
            h.remove()
    assert margins, "no router ran"
    return result, min(margins)


def make(name, spec, index, out_root):
    for attempt in range(200):
        seed = 4321 + 100 * index + attempt
        model = build(spec, seed)
        rng = np.random.default_rng(seed)
        ids = [1] + rng.integers(3, COMMON["vocab_size"], size=PROMPT_LEN - 1).tolist()
        with torch.no_grad():
            logits, m1 = smallest_margin(model, lambda: model(torch.tensor([ids])).logits[0].float().numpy())
            greedy, m2 = smallest_margin(model, lambda: model.generate(
                torch.tensor([ids[:GREEDY_PROMPT]]), max_new_tokens=GREEDY_NEW, do_sample=False, pad_token_id=0,
                eos_token_id=None)[0, GREEDY_PROMPT:].tolist())
        if min(m1, m2) >= MIN_MARGIN and len(set(greedy)) >= 4:  # a varied continuation tells more
            break
        print(f"{name}: seed {seed}: router margin {min(m1, m2):.2e}, {len(set(greedy))} distinct greedy tokens",
              flush=True)
    else:
        raise SystemExit(f"{name}: no seed gave router margins >= {MIN_MARGIN} and a varied continuation")
    out = os.path.join(out_root, name)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    gen = os.path.join(out, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    np.save(os.path.join(out, "logits.npy"), logits.astype(np.float32))
    with open(os.path.join(out, "ids.json"), "w") as f:
        json.dump({"ids": ids, "greedy_prompt": ids[:GREEDY_PROMPT], "greedy_continuation": greedy,
                   "seed": seed, "router_margin": min(m1, m2), "transformers": transformers.__version__,
                   "torch": torch.__version__}, f, indent=1)
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"{name}: seed {seed}, {sum(p.numel() for p in model.parameters())} params, {size} bytes, "
          f"router margin {min(m1, m2):.4f}, logits [{logits.min():.2f}, {logits.max():.2f}], greedy {greedy}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "hf"))
    args = parser.parse_args()
    for i, (name, spec) in enumerate(CONFIGS.items()):
        make(name, spec, i, args.out)


if __name__ == "__main__":
    main()
