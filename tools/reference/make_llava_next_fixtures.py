#!/usr/bin/env python3
"""Makes tests/fixtures/vision/llava_next/: a tiny random LlavaNextForConditionalGeneration (LLaVA-NeXT:
anyres tiling with image_grid_pinpoints, the unpad step and image_newline) and what transformers computes
for a prompt with two images of different aspect ratios (the reference of tests/runtime/vision/
llava_next_test.cpp and of the LLaVA-NeXT case of tests/e2e/serve_image_test.cpp).

Needs numpy, Pillow, torch, tokenizers and transformers (5.x; written against 5.25). Run after
make_vision_chat_fixture.py (it reuses that fixture's tokenizer):
    python3 tools/reference/make_llava_next_fixtures.py [--out tests/fixtures/vision/llava_next]

What it writes, all small:
- config.json, model.safetensors: LlavaNextForConditionalGeneration, as save_pretrained writes it (CLIP
  tower: image 32, patch 8, hidden 32, 2 layers, "default" features: 16 per tile; Llama text model,
  hidden 32; image_grid_pinpoints [[32, 64], [64, 32], [64, 64]] (height, width)).
- preprocessor_config.json: LlavaNextImageProcessorPil (shortest edge 32, crop 32, the same pinpoints).
- tokenizer.json, tokenizer_config.json, chat_template.jinja: llava_chat's (ChatML, <image> special).
- wide.png (50x30), tall.png (28x44), big.png (70x60): best resolutions 32x64, 64x32 and 64x64.
- pixel_values__<image>.npy [tiles, 3, 32, 32]: the processor's tiles of each image alone (the base image
  resized to 32x32 first, then the tiles of the resized and padded image, row by row).
- reference.json: per image its size, the tile count, and the number of <image> tokens LlavaNextProcessor
  expands it to; "prompt_ids" (one <image> per image, as the chat template renders it), "ids" (the
  processor's expansion) and the 8-token greedy continuation of LlavaNextForConditionalGeneration.generate.
- image_features.npy [features, 32]: model.get_image_features' packed features of wide.png then tall.png
  (base tile features, then the unpadded grid with image_newline closing each row), as the LM receives them.
- logits.npy [T, vocab]: the whole model's logits at every position of "ids" with both images.
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch
import transformers
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vision_fixtures import picture  # noqa: E402

PINPOINTS = [[32, 64], [64, 32], [64, 64]]
IMAGES = {"wide.png": (50, 30, 31), "tall.png": (28, 44, 32), "big.png": (70, 60, 33)}  # width, height, seed
PROMPT = [{"role": "user", "content": [
    {"type": "text", "text": "Compare "},
    {"type": "image_url", "image_url": {"url": "wide.png"}},
    {"type": "text", "text": " and "},
    {"type": "image_url", "image_url": {"url": "tall.png"}},
    {"type": "text", "text": " please."}]}]


def main():
    parser = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    fixtures = os.path.join(here, "..", "..", "tests", "fixtures", "vision")
    parser.add_argument("--out", default=os.path.join(fixtures, "llava_next"))
    parser.add_argument("--tokenizer", default=os.path.join(fixtures, "llava_chat"))
    args = parser.parse_args()
    out = args.out
    os.makedirs(out, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(os.path.join(args.tokenizer, name), os.path.join(out, name))
    tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(out)
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")

    vision = transformers.CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                           num_hidden_layers=2, num_attention_heads=4, layer_norm_eps=1e-5,
                                           hidden_act="quick_gelu")
    text = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                    max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                    bos_token_id=None, eos_token_id=eos, pad_token_id=0)
    config = transformers.LlavaNextConfig(vision_config=vision, text_config=text, image_token_index=image_token,
                                          vision_feature_layer=-2, vision_feature_select_strategy="default",
                                          projector_hidden_act="gelu", image_grid_pinpoints=PINPOINTS)
    torch.manual_seed(25)
    model = transformers.LlavaNextForConditionalGeneration(config).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias") or "norm" in name:
                p.copy_(0.1 * torch.randn_like(p))
            elif "embedding" in name or "image_newline" in name:
                p.copy_(0.5 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    model.save_pretrained(out, safe_serialization=True)
    if os.path.exists(os.path.join(out, "generation_config.json")):
        os.remove(os.path.join(out, "generation_config.json"))

    image_processor = transformers.LlavaNextImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=PINPOINTS)
    image_processor.save_pretrained(out)
    processor = transformers.LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                                patch_size=8, vision_feature_select_strategy="default",
                                                num_additional_image_tokens=1, image_token="<image>")
    images = {}
    reference = {"image_token_id": image_token, "images": {}}
    for name, (w, h, seed) in IMAGES.items():
        picture(w, h, seed).save(os.path.join(out, name))
        images[name] = Image.open(os.path.join(out, name)).convert("RGB")
        alone = processor(text="<image>", images=[images[name]], return_tensors="pt")
        pv = alone["pixel_values"][0].numpy().astype(np.float32)
        np.save(os.path.join(out, f"pixel_values__{name}.npy"), pv)
        tokens = int((alone["input_ids"][0] == image_token).sum())
        reference["images"][name] = {"width": w, "height": h, "tiles": int(pv.shape[0]), "image_tokens": tokens}
        print(name, "tiles", pv.shape[0], "image tokens", tokens)

    rendered = tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    pair = [images["wide.png"], images["tall.png"]]
    batch = processor(text=rendered, images=pair, return_tensors="pt", add_special_tokens=False)
    ids = batch["input_ids"][0].tolist()
    with torch.no_grad():
        feats = model.model.get_image_features(pixel_values=batch["pixel_values"], image_sizes=batch["image_sizes"],
                                               vision_feature_layer=-2,
                                               vision_feature_select_strategy="default").pooler_output
        feats = torch.cat(list(feats), dim=0)
        assert feats.shape[0] == ids.count(image_token), (feats.shape, ids.count(image_token))
        logits = model(input_ids=torch.tensor([ids]), pixel_values=batch["pixel_values"],
                       image_sizes=batch["image_sizes"]).logits[0]
        model.generation_config.eos_token_id = None
        model.generation_config.pad_token_id = 0
        gen = model.generate(input_ids=torch.tensor([ids]), pixel_values=batch["pixel_values"],
                             image_sizes=batch["image_sizes"], max_new_tokens=8, do_sample=False)
    np.save(os.path.join(out, "image_features.npy"), feats.numpy().astype(np.float32))
    np.save(os.path.join(out, "logits.npy"), logits.numpy().astype(np.float32))
    greedy = gen[0, len(ids):].tolist()
    reference.update({"messages": PROMPT, "rendered": rendered, "prompt_ids": prompt_ids, "ids": ids,
                      "greedy": greedy, "text": tokenizer.decode(greedy, skip_special_tokens=False)})
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
    print("features", tuple(feats.shape), "ids", len(ids), "greedy", greedy, repr(reference["text"]))


if __name__ == "__main__":
    main()
