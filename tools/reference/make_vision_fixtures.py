#!/usr/bin/env python3
"""Makes the reference fixtures of strata's vision tests (tests/fixtures/vision/).

Needs numpy, Pillow, torch, transformers (5.x; written against 5.25) and safetensors. Run:
    python3 tools/reference/make_vision_fixtures.py [--out tests/fixtures/vision]

What it writes, all small:
- images/: test images made here with Pillow: a JPEG carrying an EXIF orientation tag (6), the same
  picture with each orientation 1..8 (small), a PNG with an alpha gradient, a palette PNG with a
  transparent index, a grayscale PNG, a larger PNG (a downscale), a lossy WebP and a lossless WebP with
  alpha; plus "bombs": a PNG, JPEG and WebP whose headers claim a huge image (a few dozen bytes each).
- decoded/<image>.npy: what transformers sees of each file: Pillow's decode, ImageOps.exif_transpose
  (as transformers.image_utils.load_image does), then transformers' convert_to_rgb (alpha composited over
  white), as float32 [H, W, 3] in 0..255.
- processors/<name>.json and pixel_values/<name>__<image>.npy: transformers' own image processors
  (the Pillow backends CLIPImageProcessorPil / LlavaImageProcessorPil, whose resize is Pillow's) with tiny
  sizes, and their pixel_values [3, H, W] for each image.
- llava_t5/ and llava_t4/: two tiny random LlavaForConditionalGeneration checkpoints (CLIP tower: image
  32, patch 8, hidden 32, 2 layers; tiny Llama text model). llava_t5 is exactly what transformers 5.25's
  save_pretrained writes ("vision_tower.embeddings...", "multi_modal_projector...",
  "language_model.model...", image_token_index); llava_t4 has the tower renamed to the layout transformers 4
  wrote ("vision_tower.vision_model.embeddings..."). They differ in vision_feature_layer / select strategy /
  activations so both branches are covered. Each holds preprocessor_config.json, image.png,
  pixel_values.npy, image_features.npy [n_features, text_hidden] from model.get_image_features, and
  logits.npy [T, vocab] of the whole model over ids.json's "ids" (the placeholder expanded to one token
  per feature; "prompt_ids" holds it once, as a user writes it) and its 8-token greedy continuation.
"""
import argparse
import json
import os
import struct
import zlib

import numpy as np
import torch
import transformers
from PIL import Image, ImageDraw, ImageOps
from safetensors.torch import load_file, save_file
from transformers.image_transforms import convert_to_rgb


def picture(width, height, seed):
    """A test picture with edges, gradients and flat regions (JPEG/WebP-friendly, not trivial)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 255 * x / max(width - 1, 1)
    g = 255 * y / max(height - 1, 1)
    b = 128 + 100 * np.sin(x / 3.0) * np.cos(y / 5.0)
    img = np.stack([r, g, b], axis=-1)
    img += rng.normal(0, 6, img.shape)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    d.rectangle([width // 5, height // 5, width // 2, height // 2], fill=(250, 20, 30))
    d.ellipse([width // 2, height // 3, width - 3, height - 2], fill=(20, 40, 230))
    d.line([0, height - 1, width - 1, 0], fill=(0, 0, 0), width=2)
    return im


def with_alpha(im, seed):
    w, h = im.size
    y, x = np.mgrid[0:h, 0:w]
    alpha = (255 * x / (w - 1)).astype(np.uint8)
    alpha[: h // 4, :] = 0      # fully transparent band
    alpha[-h // 4:, :] = 255    # fully opaque band
    rgba = np.dstack([np.array(im), alpha])
    return Image.fromarray(rgba, "RGBA")


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_images(out):
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    path = lambda name: os.path.join(out, "images", name)
    base = picture(40, 24, 1)
    exif = Image.Exif()
    exif[0x0112] = 6
    base.save(path("orient6.jpg"), "JPEG", quality=90, exif=exif.tobytes())
    small = picture(12, 8, 2)
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        small.save(path(f"orient{o}_small.jpg"), "JPEG", quality=95, exif=exif.tobytes())
    with_alpha(picture(30, 20, 3), 3).save(path("alpha.png"))
    pal = picture(20, 14, 4).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(path("palette.png"), transparency=3)
    picture(18, 22, 5).convert("L").save(path("gray.png"))
    picture(120, 90, 6).save(path("large.png"))
    picture(36, 28, 7).save(path("photo.webp"), "WEBP", quality=80)
    with_alpha(picture(26, 18, 8), 8).save(path("alpha.webp"), "WEBP", lossless=True)

    # Bombs: headers that claim 100000 x 100000 (10^10 pixels) in a few bytes.
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    with open(path("bomb.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))
    jpeg = bytearray(open(path("orient1_small.jpg"), "rb").read())
    sof = next(i for i in range(len(jpeg) - 1) if jpeg[i] == 0xFF and jpeg[i + 1] in (0xC0, 0xC1, 0xC2))
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)  # height, width
    open(path("bomb.jpg"), "wb").write(bytes(jpeg))
    # A lossless WebP's VP8L header packs width-1 and height-1 in 14 bits each: 16384 x 16384.
    webp = bytearray(open(path("alpha.webp"), "rb").read())
    assert webp[12:16] == b"VP8L", "expected a simple lossless WebP"
    bits = struct.unpack("<I", webp[21:25])[0]
    bits = (bits & ~0x0FFFFFFF) | 16383 | (16383 << 14)
    webp[21:25] = struct.pack("<I", bits)
    open(path("bomb.webp"), "wb").write(bytes(webp))


def decoded(path):
    """What transformers works on: Pillow's decode, EXIF transpose, convert_to_rgb (white background)."""
    im = ImageOps.exif_transpose(Image.open(path))
    return np.asarray(convert_to_rgb(im, return_numpy=True), dtype=np.uint8)


PROCESSORS = {
    # CLIP's processor at a tiny size: shortest edge 32, center crop 32.
    "clip32": (transformers.CLIPImageProcessorPil, dict(size={"shortest_edge": 32},
                                                        crop_size={"height": 32, "width": 32})),
    # LLaVA-1.5's pad-to-square (mean color) then the same resize and crop; a non-square crop too.
    "llava_pad": (transformers.LlavaImageProcessorPil, dict(do_pad=True, size={"shortest_edge": 24},
                                                            crop_size={"height": 24, "width": 20})),
    # Bilinear, a fixed (height, width) resize, no crop, custom mean/std.
    "fixed_bilinear": (transformers.CLIPImageProcessorPil, dict(size={"height": 20, "width": 28}, resample=2,
                                                                do_center_crop=False, image_mean=[0.5, 0.4, 0.3],
                                                                image_std=[0.2, 0.25, 0.3])),
}

IMAGES = ["orient6.jpg", "alpha.png", "palette.png", "gray.png", "large.png", "photo.webp", "alpha.webp"]


def pixel_values(processor, path):
    im = ImageOps.exif_transpose(Image.open(path))
    return processor(images=im, return_tensors="np")["pixel_values"][0].astype(np.float32)


def write_preprocessing(out):
    os.makedirs(os.path.join(out, "decoded"), exist_ok=True)
    os.makedirs(os.path.join(out, "processors"), exist_ok=True)
    os.makedirs(os.path.join(out, "pixel_values"), exist_ok=True)
    # large.png only feeds the processors (its decode is plain PNG, covered by the others).
    names = [n for n in IMAGES if n != "large.png"] + [f"orient{o}_small.jpg" for o in range(1, 9)]
    for name in names:
        np.save(os.path.join(out, "decoded", name + ".npy"),
                decoded(os.path.join(out, "images", name)).astype(np.float32))
    for pname, (cls, kwargs) in PROCESSORS.items():
        processor = cls(**kwargs)
        with open(os.path.join(out, "processors", pname + ".json"), "w") as f:
            f.write(processor.to_json_string())
        for name in IMAGES:
            np.save(os.path.join(out, "pixel_values", f"{pname}__{name}.npy"),
                    pixel_values(processor, os.path.join(out, "images", name)))


LLAVA = {
    # transformers' defaults: layer -2, "default" (drops the class token), QuickGELU tower, GELU projector.
    "llava_t5": dict(vision=dict(hidden_act="quick_gelu"), layer=-2, strategy="default", projector_act="gelu",
                     seed=11),
    # The last layer, "full" (keeps the class token), exact GELU tower, tanh-GELU projector.
    # Stored in bf16 (the weights are rounded to bf16 before the reference runs, in f32): half the bytes,
    # and the bf16 path of the loader.
    "llava_t4": dict(vision=dict(hidden_act="gelu"), layer=-1, strategy="full", projector_act="gelu_pytorch_tanh",
                     seed=12, bf16=True),
}

TEXT = dict(vocab_size=160, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False)
IMAGE_TOKEN = 159


def to_t4_names(state):
    prefix = "vision_tower."
    return {(prefix + "vision_model." + k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def write_llava(out, name, spec):
    vision = transformers.CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                           num_hidden_layers=2, num_attention_heads=4, layer_norm_eps=1e-5,
                                           **spec["vision"])
    text = transformers.LlamaConfig(**TEXT)
    config = transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN,
                                      vision_feature_layer=spec["layer"],
                                      vision_feature_select_strategy=spec["strategy"],
                                      projector_hidden_act=spec["projector_act"])
    torch.manual_seed(spec["seed"])
    model = transformers.LlavaForConditionalGeneration(config).float().eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname and pname.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))   # random norms catch a missing weight multiply
            elif pname.endswith("bias") or "norm" in pname:
                p.copy_(0.1 * torch.randn_like(p))
            elif "embedding" in pname:
                p.copy_(0.5 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
            if spec.get("bf16"):
                p.copy_(p.to(torch.bfloat16).float())
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    for extra in ("generation_config.json",):
        if os.path.exists(os.path.join(d, extra)):
            os.remove(os.path.join(d, extra))
    processor = transformers.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(d)
    picture(44, 30, 21).save(os.path.join(d, "image.png"))
    pv = processor(images=Image.open(os.path.join(d, "image.png")), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        feats = model.model.get_image_features(pixel_values=pv, vision_feature_layer=spec["layer"],
                                               vision_feature_select_strategy=spec["strategy"]).pooler_output
    feats = torch.cat(list(feats), dim=0) if isinstance(feats, (list, tuple)) else feats.reshape(-1, feats.shape[-1])
    np.save(os.path.join(d, "pixel_values.npy"), pv[0].numpy().astype(np.float32))
    np.save(os.path.join(d, "image_features.npy"), feats.numpy().astype(np.float32))
    # Logits of every position of a prompt whose image placeholder is expanded to one token per feature,
    # as LlavaProcessor expands "<image>": the features replace those tokens' embeddings.
    n = feats.shape[0]
    rng = np.random.default_rng(spec["seed"])
    before, after = rng.integers(3, IMAGE_TOKEN, size=3).tolist(), rng.integers(3, IMAGE_TOKEN, size=5).tolist()
    ids = [1] + before + [IMAGE_TOKEN] * n + after
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), pixel_values=pv).logits[0]
    np.save(os.path.join(d, "logits.npy"), logits.numpy().astype(np.float32))
    # Greedy continuation (no stop token), as `strata generate --image` runs it.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([ids]), pixel_values=pv, max_new_tokens=8, do_sample=False)
    greedy = out[0, len(ids):].tolist()
    with open(os.path.join(d, "ids.json"), "w") as f:
        json.dump({"ids": ids, "prompt_ids": [1] + before + [IMAGE_TOKEN] + after, "greedy_continuation": greedy}, f)
    # transformers 5.25's save_pretrained writes "vision_tower.embeddings...", "multi_modal_projector...",
    # "language_model.model..." and image_token_index: llava_t5 keeps exactly that. llava_t4 is renamed to
    # the layout transformers 4 wrote (the tower under "vision_tower.vision_model.").
    path = os.path.join(d, "model.safetensors")
    saved = load_file(path)
    assert any(k.startswith("vision_tower.embeddings.") for k in saved), sorted(saved)[:4]
    if name == "llava_t4":
        saved = {k: v.to(torch.bfloat16) for k, v in saved.items()} if spec.get("bf16") else saved
        save_file(to_t4_names(saved), path, metadata={"format": "pt"})
    print(name, "features", tuple(feats.shape))


def main():
    parser = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "..", "..", "tests", "fixtures", "vision"))
    args = parser.parse_args()
    write_images(args.out)
    write_preprocessing(args.out)
    for name, spec in LLAVA.items():
        write_llava(args.out, name, spec)


if __name__ == "__main__":
    main()
