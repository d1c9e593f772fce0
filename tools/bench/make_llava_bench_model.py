#!/usr/bin/env python3
"""Writes a LLaVA-1.5-7B-shaped LlavaForConditionalGeneration directory with random bf16 weights, for
scripts/bench-vision.sh: a CLIP ViT-L/14-336 tower (24 layers of 1024, 16 heads, 577 positions, QuickGELU,
features from layer -2 without the class token: 576 per image), the two-layer GELU projector 1024 -> 4096
-> 4096 and a Llama-2-7B text model (32 layers of 4096, 32 heads, MLP 11008). The weights are random: the
benchmark times the computation, not the answers.

Names follow the published llava-hf/llava-1.5-7b-hf checkpoint ("vision_tower.vision_model.",
"multi_modal_projector.", "language_model.model.", "language_model.lm_head."), which strata and
transformers 4 and 5 read. Besides the weights: config.json, preprocessor_config.json (CLIP's 336-pixel
processor), a byte-level BPE tokenizer.json trained here on synthetic ASCII words (about 32k tokens, so the
text vocabulary is about the real one's; every token decodes to ASCII) with the ChatML specials and
<image>, and tokenizer_config.json with a ChatML chat template whose image parts render as <image>.

Needs numpy and tokenizers (no torch, no transformers). About 14 GB on disk; a minute or two.
    python3 tools/bench/make_llava_bench_model.py --out /tmp/llava-7b-shape
"""
import argparse
import json
import os
import struct
import zlib

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

VISION = dict(hidden=1024, ffn=4096, layers=24, heads=16, image=336, patch=14)
TEXT = dict(hidden=4096, ffn=11008, layers=32, heads=32, kv_heads=32, max_pos=4096)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]
INSTRUCTION = "Describe this image in detail: the objects, their colours, where they are and what is happening."
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or part['type'] == 'image_url' %}<image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SHARD_BYTES = 4 << 30


def make_tokenizer(out, vocab):
    rng = np.random.default_rng(7)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    weights = np.linspace(2.0, 0.2, len(letters))
    weights /= weights.sum()

    def words(n):
        lengths = rng.integers(2, 9, n)
        chars = rng.choice(letters, size=int(lengths.sum()), p=weights)
        out, at = [], 0
        for length in lengths:
            out.append("".join(chars[at:at + length]))
            at += length
        return out

    corpus = [" ".join(words(40)) for _ in range(20000)] + [INSTRUCTION] * 200
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS, initial_alphabet=[], show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
                   "pad_token": "<|endoftext|>", "unk_token": None, "model_max_length": TEXT["max_pos"],
                   "chat_template": CHAT_TEMPLATE}, f, indent=2)
    with open(os.path.join(out, "chat_template.jinja"), "w") as f:
        f.write(CHAT_TEMPLATE)
    return tok


def tensors(vocab):
    """(name, shape, kind) in checkpoint order; kind: w (random), one (norm weight), zero (bias)."""
    v, t = VISION, TEXT
    positions = (v["image"] // v["patch"]) ** 2 + 1
    vt = "vision_tower.vision_model."
    out = [(vt + "embeddings.class_embedding", [v["hidden"]], "w"),
           (vt + "embeddings.patch_embedding.weight", [v["hidden"], 3, v["patch"], v["patch"]], "w"),
           (vt + "embeddings.position_embedding.weight", [positions, v["hidden"]], "w"),
           (vt + "pre_layrnorm.weight", [v["hidden"]], "one"), (vt + "pre_layrnorm.bias", [v["hidden"]], "zero")]
    for i in range(v["layers"]):
        p = f"{vt}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out += [(p + f"self_attn.{proj}.weight", [v["hidden"], v["hidden"]], "w"),
                    (p + f"self_attn.{proj}.bias", [v["hidden"]], "zero")]
        out += [(p + "layer_norm1.weight", [v["hidden"]], "one"), (p + "layer_norm1.bias", [v["hidden"]], "zero"),
                (p + "layer_norm2.weight", [v["hidden"]], "one"), (p + "layer_norm2.bias", [v["hidden"]], "zero"),
                (p + "mlp.fc1.weight", [v["ffn"], v["hidden"]], "w"), (p + "mlp.fc1.bias", [v["ffn"]], "zero"),
                (p + "mlp.fc2.weight", [v["hidden"], v["ffn"]], "w"), (p + "mlp.fc2.bias", [v["hidden"]], "zero")]
    out += [(vt + "post_layernorm.weight", [v["hidden"]], "one"), (vt + "post_layernorm.bias", [v["hidden"]], "zero"),
            ("multi_modal_projector.linear_1.weight", [t["hidden"], v["hidden"]], "w"),
            ("multi_modal_projector.linear_1.bias", [t["hidden"]], "zero"),
            ("multi_modal_projector.linear_2.weight", [t["hidden"], t["hidden"]], "w"),
            ("multi_modal_projector.linear_2.bias", [t["hidden"]], "zero"),
            ("language_model.model.embed_tokens.weight", [vocab, t["hidden"]], "w")]
    kv = t["hidden"] // t["heads"] * t["kv_heads"]
    for i in range(t["layers"]):
        p = f"language_model.model.layers.{i}."
        out += [(p + "input_layernorm.weight", [t["hidden"]], "one"),
                (p + "self_attn.q_proj.weight", [t["hidden"], t["hidden"]], "w"),
                (p + "self_attn.k_proj.weight", [kv, t["hidden"]], "w"),
                (p + "self_attn.v_proj.weight", [kv, t["hidden"]], "w"),
                (p + "self_attn.o_proj.weight", [t["hidden"], t["hidden"]], "w"),
                (p + "post_attention_layernorm.weight", [t["hidden"]], "one"),
                (p + "mlp.gate_proj.weight", [t["ffn"], t["hidden"]], "w"),
                (p + "mlp.up_proj.weight", [t["ffn"], t["hidden"]], "w"),
                (p + "mlp.down_proj.weight", [t["hidden"], t["ffn"]], "w")]
    out += [("language_model.model.norm.weight", [t["hidden"]], "one"),
            ("language_model.lm_head.weight", [vocab, t["hidden"]], "w")]
    return out


def bf16_values(n, kind, rng):
    """n bf16 bit patterns: random weights of magnitude 2^-7..2^-5 with random sign (std about 0.015), ones or
    zeros. Drawn as raw bits: a 7B model in seconds rather than minutes."""
    if kind == "one":
        return np.full(n, 0x3F80, dtype=np.uint16)
    if kind == "zero":
        return np.zeros(n, dtype=np.uint16)
    bits = rng.integers(0, 1 << 16, n, dtype=np.uint16)
    return (bits & np.uint16(0x80FF)) | np.uint16(0x3C00)  # sign, lowest exponent bit, mantissa; exponent 120/121


def write_shard(path, items, rng):
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, _ in items:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, shape, kind in items:
            n = int(np.prod(shape))
            for start in range(0, n, 1 << 26):
                f.write(bf16_values(min(1 << 26, n - start), kind, rng).tobytes())


def write_png(path, rgb):
    """rgb: uint8 [h, w, 3]. A plain PNG (no Pillow needed)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
                chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def write_images(out, count, side):
    """`count` different side x side pictures (gradients, a square and noise): images/000.png ..."""
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    for i in range(count):
        img = np.stack([255 * x / side, 255 * y / side, 128 + 100 * np.sin(x / (5 + i) + i)], axis=-1)
        img += rng.normal(0, 12, img.shape)
        a, b = rng.integers(0, side // 2, 2)
        img[a:a + side // 3, b:b + side // 3] = rng.integers(0, 256, 3)
        write_png(os.path.join(out, "images", f"{i:03d}.png"), np.clip(img, 0, 255).astype(np.uint8))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--vocab", type=int, default=32000, help="target tokenizer size (the text vocabulary)")
    parser.add_argument("--tiny", action="store_true", help="widths of 64 and 2 layers (a smoke test of the script)")
    parser.add_argument("--images", type=int, default=16, help="336 x 336 test pictures written to OUT/images/")
    a = parser.parse_args()
    if a.tiny:
        VISION.update(hidden=64, ffn=128, layers=2, heads=4)
        TEXT.update(hidden=64, ffn=128, layers=2, heads=4, kv_heads=4)
    os.makedirs(a.out, exist_ok=True)
    write_images(a.out, a.images, VISION["image"])
    tok = make_tokenizer(a.out, a.vocab)
    vocab = tok.get_vocab_size()
    image_token, eos = tok.token_to_id("<image>"), tok.token_to_id("<|im_end|>")
    instruction_tokens = len(tok.encode(INSTRUCTION).ids)

    v, t = VISION, TEXT
    config = {
        "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava", "torch_dtype": "bfloat16",
        "image_token_index": image_token, "image_seq_length": (v["image"] // v["patch"]) ** 2,
        "projector_hidden_act": "gelu", "multimodal_projector_bias": True, "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default", "tie_word_embeddings": False,
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": v["hidden"],
                          "intermediate_size": v["ffn"], "num_hidden_layers": v["layers"],
                          "num_attention_heads": v["heads"], "image_size": v["image"], "patch_size": v["patch"],
                          "num_channels": 3, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
                          "projection_dim": 768},
        "text_config": {"model_type": "llama", "vocab_size": vocab, "hidden_size": t["hidden"],
                        "intermediate_size": t["ffn"], "num_hidden_layers": t["layers"],
                        "num_attention_heads": t["heads"], "num_key_value_heads": t["kv_heads"],
                        "max_position_embeddings": t["max_pos"], "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                        "hidden_act": "silu", "tie_word_embeddings": False, "bos_token_id": None,
                        "eos_token_id": eos, "pad_token_id": 0, "torch_dtype": "bfloat16"},
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(a.out, "preprocessor_config.json"), "w") as f:
        json.dump({"image_processor_type": "CLIPImageProcessor", "crop_size": {"height": 336, "width": 336},
                   "size": {"shortest_edge": 336}, "do_center_crop": True, "do_convert_rgb": True,
                   "do_normalize": True, "do_rescale": True, "do_resize": True, "resample": 3,
                   "rescale_factor": 1 / 255, "image_mean": [0.48145466, 0.4578275, 0.40821073],
                   "image_std": [0.26862954, 0.26130258, 0.27577711]}, f, indent=2)

    rng = np.random.default_rng(24)
    shards, current, size = [], [], 0
    for item in tensors(vocab):
        n = int(np.prod(item[1])) * 2
        if current and size + n > SHARD_BYTES:
            shards.append(current)
            current, size = [], 0
        current.append(item)
        size += n
    shards.append(current)
    weight_map, total = {}, 0
    for i, items in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_shard(os.path.join(a.out, name), items, rng)
        for tensor, shape, _ in items:
            weight_map[tensor] = name
            total += int(np.prod(shape)) * 2
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    print(json.dumps({"out": a.out, "vocab": vocab, "image_token": image_token, "bytes": total,
                      "instruction_tokens": instruction_tokens, "shards": len(shards)}))


if __name__ == "__main__":
    main()
