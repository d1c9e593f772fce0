#!/usr/bin/env python3
"""The captioning peer for scripts/bench-vision.sh: Hugging Face transformers
LlavaForConditionalGeneration.generate in static batches on the same GPU, checkpoint and workload as the
strata run: each request is the same ~20-token instruction with one 336 x 336 image of OUT/images (taken in
turn) in a ChatML user turn, answered with OUTPUT_LEN greedy tokens (no early stop). For each batch size B:
REPEATS batches of B different images, each timed from the raw images (preprocessing included, as the
server's latency includes decoding and preprocessing) to the last token; the time to first token is a
max_new_tokens=1 run of the same batch (prefill with the vision tower). A static batch's requests all end
when the batch does, so a batch's latency is each of its requests' latency, and B / latency is the most
requests per second it sustains without queueing. Prints one JSON object.

Needs torch (CUDA), transformers (4.45+ or 5), Pillow.
    python3 tools/bench/hf_vision_peer.py --model /tmp/llava-7b-shape --batches 1,8,32,64 --output-len 32
"""
import argparse
import glob
import json
import os
import statistics
import time

import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, help="directory of tools/bench/make_llava_bench_model.py")
    p.add_argument("--batches", default="1,8,32,64")
    p.add_argument("--repeats", type=int, default=3, help="timed batches per batch size")
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument("--text", default="Describe this image in detail: the objects, their colours, where they are and "
                                     "what is happening.")
    p.add_argument("--device", default="cuda")
    p.add_argument("--attn", default="sdpa", help="transformers attention implementation (sdpa | eager)")
    a = p.parse_args()
    import transformers
    from PIL import Image
    from transformers import CLIPImageProcessor, LlavaForConditionalGeneration, PreTrainedTokenizerFast

    dtype = torch.bfloat16 if a.device == "cuda" else torch.float32
    model = LlavaForConditionalGeneration.from_pretrained(a.model, dtype=dtype, attn_implementation=a.attn)
    model = model.to(a.device).eval()
    processor = CLIPImageProcessor.from_pretrained(a.model)
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(a.model, "tokenizer.json"))
    config = model.config
    image_token = config.image_token_index if hasattr(config, "image_token_index") else config.image_token_id
    per_image = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    # What strata's ChatML template renders for [text, image] content, with <image> expanded as LlavaProcessor does.
    ids = (tok.encode("<|im_start|>user\n" + a.text) + [image_token] * per_image +
           tok.encode("<|im_end|>\n<|im_start|>assistant\n"))
    files = sorted(glob.glob(os.path.join(a.model, "images", "*.png")))
    assert files, f"no images in {a.model}/images (make_llava_bench_model.py writes them)"
    images = [Image.open(f).convert("RGB") for f in files]
    next_image = [0]

    def run(batch, new_tokens):
        picked = [images[(next_image[0] + i) % len(images)] for i in range(batch)]
        next_image[0] += batch
        if a.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        pixels = processor(images=picked, return_tensors="pt")["pixel_values"].to(a.device, dtype)
        input_ids = torch.tensor([ids] * batch, device=a.device)
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values=pixels,
                             max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
        if a.device == "cuda":
            torch.cuda.synchronize()
        assert out.shape[1] - input_ids.shape[1] == new_tokens or out.shape[1] == new_tokens, out.shape
        return time.perf_counter() - start

    rows = []
    with torch.no_grad():
        run(2, 2)  # warm-up
        for batch in [int(b) for b in a.batches.split(",")]:
            run(batch, 2)
            try:
                ttft = [run(batch, 1) for _ in range(a.repeats)]
                latency = [run(batch, a.output_len) for _ in range(a.repeats)]
            except torch.cuda.OutOfMemoryError:
                rows.append({"batch": batch, "error": "out of memory"})
                torch.cuda.empty_cache()
                continue
            lat = statistics.median(latency)
            rows.append({"batch": batch, "latency_ms_p50": lat * 1e3, "latency_ms_max": max(latency) * 1e3,
                         "ttft_ms_p50": statistics.median(ttft) * 1e3, "requests_per_s": batch / lat,
                         "output_tokens_per_s": batch * a.output_len / lat})
    print(json.dumps({
        "peer": f"transformers {transformers.__version__} LlavaForConditionalGeneration.generate, static batches, "
                f"attn {a.attn}",
        "device": torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu", "prompt_tokens": len(ids),
        "output_len": a.output_len, "repeats": a.repeats, "batches": rows,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if a.device == "cuda" else None}))


if __name__ == "__main__":
    main()
