#!/usr/bin/env python3
"""Makes tests/fixtures/vision/llava_chat/: a tiny random LLaVA with a tokenizer and a chat template, and
what transformers answers to a few OpenAI-style chat requests with images (the reference of strata serve's
image requests, tests/e2e/serve_image_test.cpp).

Needs numpy, Pillow, torch, tokenizers and transformers (5.x; written against 5.25). Run:
    python3 tools/reference/make_vision_chat_fixture.py [--out tests/fixtures/vision/llava_chat]

What it writes, all small:
- tokenizer.json: a byte-level BPE trained here on a few ASCII sentences (no byte alphabet beyond what
  they use, so every token decodes to ASCII), with the special tokens <|endoftext|>, <|im_start|>,
  <|im_end|> and <image>; tokenizer_config.json with a ChatML chat template whose image parts render as
  <image> at the part's position (as the chat templates of transformers' LLaVA processors do).
- config.json, model.safetensors, preprocessor_config.json: LlavaForConditionalGeneration (CLIP tower:
  image 32, patch 8, hidden 32, 2 layers, "default" features: 16 per image; Llama text model, hidden 32).
- cat.png, dog.png: two test pictures.
- chat.json: per request its messages (image parts name a file of this folder), the prompt ids that
  tokenizer.apply_chat_template renders (one <image> per image), those ids with each <image> expanded
  to one token per feature (as LlavaProcessor expands it), transformers' 8-token greedy continuation
  (LlavaForConditionalGeneration.generate, no stop token) and its text (tokenizer.decode).
"""
import argparse
import json
import os

import numpy as np
import torch
import transformers
from PIL import Image, ImageDraw
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

CORPUS = [
    "What is in this picture? A red square and a blue circle on a gradient.",
    "Describe the image in one short sentence, please.",
    "The cat sat on the mat. The dog ran in the park. Hello there, how are you today?",
    "Compare the two pictures and say which one is brighter.",
    "You are a helpful assistant that looks at images and answers questions about them.",
]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]
# ChatML; an image part is <image> where it stands among the text parts.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or part['type'] == 'image_url' %}<image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

REQUESTS = [
    {"name": "image_in_the_middle",
     "messages": [{"role": "user", "content": [
         {"type": "text", "text": "Describe "},
         {"type": "image_url", "image_url": {"url": "cat.png"}},
         {"type": "text", "text": " in one short sentence, please."}]}]},
    {"name": "system_and_image_first",
     "messages": [{"role": "system", "content": "You are a helpful assistant."},
                  {"role": "user", "content": [
                      {"type": "image_url", "image_url": {"url": "dog.png"}},
                      {"type": "text", "text": "What is in this picture?"}]}]},
    {"name": "two_images",
     "messages": [{"role": "user", "content": [
         {"type": "text", "text": "Compare "},
         {"type": "image_url", "image_url": {"url": "cat.png"}},
         {"type": "text", "text": " and "},
         {"type": "image_url", "image_url": {"url": "dog.png"}},
         {"type": "text", "text": "."}]}]},
    {"name": "same_text_other_image",
     "messages": [{"role": "user", "content": [
         {"type": "text", "text": "Describe "},
         {"type": "image_url", "image_url": {"url": "dog.png"}},
         {"type": "text", "text": " in one short sentence, please."}]}]},
    {"name": "text_only",
     "messages": [{"role": "user", "content": "Hello there, how are you today?"}]},
]


def picture(width, height, seed, square, circle):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([255 * x / (width - 1), 255 * y / (height - 1), 128 + 90 * np.sin(x / 4.0 + seed)], axis=-1)
    img += rng.normal(0, 8, img.shape)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    d.rectangle([width // 6, height // 5, width // 2, height // 2], fill=square)
    d.ellipse([width // 2, height // 3, width - 3, height - 2], fill=circle)
    return im


def make_tokenizer(out):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=160, special_tokens=SPECIALS, initial_alphabet=[], show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>",
                                                pad_token="<|endoftext|>", unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def main():
    parser = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "..", "..", "tests", "fixtures", "vision", "llava_chat"))
    args = parser.parse_args()
    out = args.out
    os.makedirs(out, exist_ok=True)
    tokenizer = make_tokenizer(out)
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")

    vision = transformers.CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                           num_hidden_layers=2, num_attention_heads=4, layer_norm_eps=1e-5,
                                           hidden_act="quick_gelu")
    text = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                    max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                    bos_token_id=None, eos_token_id=eos, pad_token_id=0)
    config = transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token,
                                      vision_feature_layer=-2, vision_feature_select_strategy="default",
                                      projector_hidden_act="gelu")
    torch.manual_seed(24)
    model = transformers.LlavaForConditionalGeneration(config).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias") or "norm" in name:
                p.copy_(0.1 * torch.randn_like(p))
            elif "embedding" in name:
                p.copy_(0.5 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))  # larger than the other fixtures: peaked, stable argmaxes
    model.save_pretrained(out, safe_serialization=True)
    if os.path.exists(os.path.join(out, "generation_config.json")):
        os.remove(os.path.join(out, "generation_config.json"))
    processor = transformers.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(out)
    picture(44, 30, 1, (250, 20, 30), (20, 40, 230)).save(os.path.join(out, "cat.png"))
    picture(36, 40, 2, (20, 200, 40), (240, 230, 20)).save(os.path.join(out, "dog.png"))

    per_image = (32 // 8) ** 2  # "default" drops the class token
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    results = []
    for req in REQUESTS:
        files = [part["image_url"]["url"] for m in req["messages"] if not isinstance(m["content"], str)
                 for part in m["content"] if part["type"] == "image_url"]
        rendered = tokenizer.apply_chat_template(req["messages"], tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
        assert prompt_ids.count(image_token) == len(files), (rendered, prompt_ids)
        ids = []
        for t in prompt_ids:
            ids += [t] * (per_image if t == image_token else 1)
        kwargs = {}
        if files:
            pv = processor(images=[Image.open(os.path.join(out, f)) for f in files], return_tensors="pt")["pixel_values"]
            kwargs["pixel_values"] = pv
        with torch.no_grad():
            gen = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=8, do_sample=False, **kwargs)
        greedy = gen[0, len(ids):].tolist()
        results.append({"name": req["name"], "messages": req["messages"], "rendered": rendered,
                        "prompt_ids": prompt_ids, "ids": ids, "greedy": greedy,
                        "text": tokenizer.decode(greedy, skip_special_tokens=False)})
        print(req["name"], len(ids), greedy, repr(results[-1]["text"]))
    with open(os.path.join(out, "chat.json"), "w") as f:
        json.dump({"image_token_id": image_token, "features_per_image": per_image, "requests": results}, f, indent=1)


if __name__ == "__main__":
    main()
