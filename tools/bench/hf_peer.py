#!/usr/bin/env python3
"""The peer and the ceilings for scripts/bench-gpu.sh, timed on the same GPU in the same run.

Ceilings: device-to-device copy bandwidth (bytes read + written per second, and the read share) and
the dense bf16 GEMM rate. Peer: Hugging Face transformers (eager, bf16) on the same checkpoint that
strata runs: decode step time at batch 1/16/64 with a KV cache, and a 2048-token prefill.

    python3 tools/bench/hf_peer.py --model models/7b-shape [--skip-peer] > peer.json
"""
import argparse
import json
import time

import torch


def timed(fn, reps, warmup=2):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def ceilings():
    n = 2 << 30  # 2 GiB each way
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    copy_s = timed(lambda: b.copy_(a), 10)
    m = 8192
    x = torch.randn(m, m, dtype=torch.bfloat16, device="cuda")
    y = torch.randn(m, m, dtype=torch.bfloat16, device="cuda")
    gemm_s = timed(lambda: x @ y, 20)
    return {"d2d_copy_gbs": 2 * n / copy_s / 1e9, "d2d_read_gbs": n / copy_s / 1e9,
            "bf16_gemm_tflops": 2 * m ** 3 / gemm_s / 1e12}


def peer(model_path, batches, prefill_len):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16, attn_implementation="eager").cuda()
    model.eval()
    out = {"decode": {}, "transformers_attn": "eager"}
    vocab = model.config.vocab_size
    with torch.no_grad():
        for batch in batches:
            ids = torch.randint(3, vocab, (batch, 16), device="cuda")
            res = model(ids, use_cache=True)
            past = res.past_key_values
            nxt = res.logits[:, -1:].argmax(-1)
            steps = 16

            def step():
                nonlocal past, nxt
                r = model(nxt, past_key_values=past, use_cache=True)
                past = r.past_key_values
                nxt = r.logits[:, -1:].argmax(-1)

            s = timed(step, steps, warmup=2)
            out["decode"][str(batch)] = {"ms_per_step": s * 1e3, "tokens_per_s": batch / s}
        ids = torch.randint(3, vocab, (1, prefill_len), device="cuda")
        s = timed(lambda: model(ids, use_cache=False), 3, warmup=1)
        out["prefill"] = {"tokens": prefill_len, "ms": s * 1e3, "tokens_per_s": prefill_len / s}
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--prefill", type=int, default=2048)
    p.add_argument("--skip-peer", action="store_true")
    a = p.parse_args()
    result = {"gpu": torch.cuda.get_device_name(), "ceilings": ceilings()}
    torch.cuda.empty_cache()
    if not a.skip_peer:
        result["peer"] = peer(a.model, [int(b) for b in a.batches.split(",")], a.prefill)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
