"""The serving peer for scripts/bench-serve-gpu.sh: Hugging Face transformers with static batching on the
same GPU, the same checkpoint and the same workload as `strata bench serve --concurrency C`: REQUESTS
requests of PROMPT_LEN random prompt tokens and OUTPUT_LEN generated tokens (greedy, no early stop), run
as consecutive batches of C with model.generate (a batch starts when the previous one has finished,
which is what static batching means). Prints one JSON object.

    python3 tools/bench/hf_serve_peer.py --model /tmp/7b-shape --concurrency 64 --requests 128 \
        --prompt-len 128 --output-len 128
"""
import argparse
import json
import time

import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--requests", type=int, default=128)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--attn", default="sdpa", help="transformers attention implementation (sdpa | eager)")
    a = p.parse_args()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16, attn_implementation=a.attn).cuda()
    model.eval()
    gen = torch.Generator(device="cpu").manual_seed(1)
    vocab = model.config.vocab_size

    def batch_ids(n):
        return torch.randint(3, min(vocab, 500), (n, a.prompt_len), generator=gen).cuda()

    kwargs = dict(max_new_tokens=a.output_len, min_new_tokens=a.output_len, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        model.generate(batch_ids(min(a.concurrency, 4)), **dict(kwargs, max_new_tokens=4, min_new_tokens=4))  # warm-up
        torch.cuda.synchronize()
        latencies = []
        t0 = time.perf_counter()
        done = 0
        while done < a.requests:
            n = min(a.concurrency, a.requests - done)
            start = time.perf_counter()
            out = model.generate(batch_ids(n), **kwargs)
            torch.cuda.synchronize()
            assert out.shape[1] == a.prompt_len + a.output_len, out.shape
            # Every request of a static batch finishes when the batch does; all were queued at t0.
            latencies += [time.perf_counter() - t0] * n
            done += n
        wall = time.perf_counter() - t0
    latencies.sort()
    q = lambda f: latencies[min(len(latencies) - 1, int(f * (len(latencies) - 1) + 0.5))] * 1e3
    print(json.dumps({
        "peer": f"transformers {__import__('transformers').__version__} generate, static batches of {a.concurrency}, attn {a.attn}",
        "gpu": torch.cuda.get_device_name(0), "requests": a.requests, "concurrency": a.concurrency,
        "prompt_len": a.prompt_len, "output_len": a.output_len, "wall_s": wall,
        "output_tokens_per_s": a.requests * a.output_len / wall,
        "latency_ms": {"p50": q(0.5), "p95": q(0.95), "p99": q(0.99)},
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2 ** 30}))


if __name__ == "__main__":
    main()
