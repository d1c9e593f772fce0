#!/usr/bin/env python3
"""Makes tests/fixtures/vision/llava_next_gguf/: a tiny random LLaVA-NeXT (LlavaNextForConditionalGeneration:
anyres tiling over image_grid_pinpoints, the unpad step, image_newline) as the GGUF pair llama.cpp users hold,
written by llama.cpp's own tools, with transformers' logits and greedy continuations of the same weights for two
images whose best pinpoints give different tile grids.

Needs numpy, Pillow, torch, transformers (5.x), safetensors, sentencepiece, a llama.cpp source tree (its
convert_hf_to_gguf.py, gguf-py and tools/mtmd/legacy-models/{llava_surgery_v2.py,
convert_image_encoder_to_gguf.py}), and a transformers 4 install for the legacy scripts
(`pip install --target /tmp/tf4 'transformers==4.57.*' 'tokenizers==0.22.*' 'huggingface_hub<1'`). Run after
make_llava_next_fixtures.py (it reuses that fixture's wide.png and big.png):
    python3 tools/reference/make_mmproj_next_fixtures.py --llama-cpp /path/to/llama.cpp --legacy-pythonpath /tmp/tf4

How llama.cpp converts a LLaVA-1.6 (NeXT) checkpoint (its docs/multimodal/llava.md, "LLaVA 1.6 gguf conversion"),
step by step as done here:
- llava_surgery_v2.py -C -m MODEL on the checkpoint (saved in transformers 4's layout, "vision_tower.vision_model.*",
  "multi_modal_projector.*", "image_newline", "language_model.*", as the hub's llava-v1.6 checkpoints are):
  the tower goes to llava.clip, the projector and image_newline to llava.projector.
- llava.clip becomes vit/pytorch_model.bin beside a CLIP vision config.json. The docs fetch that config
  (config_vit.json of cmp-nct/llava-1.6-gguf): the tower's CLIPVisionConfig plus LLaVA-1.6's tiling keys
  image_grid_pinpoints, mm_patch_merge_type "spatial_unpad" and image_aspect_ratio "anyres". This script writes
  the tiny tower's config with the same keys. The pinpoints are written as original LLaVA configs hold them,
  (width, height) pairs, the order llama.cpp's clip.cpp reads clip.vision.image_grid_pinpoints in (and its
  Granite converter writes); transformers' config lists (height, width), so each pair is swapped.
- convert_image_encoder_to_gguf.py -m vit --llava-projector vit/llava.projector --clip-model-is-vision --use-f32:
  clip.* keys with clip.vision.image_grid_pinpoints (the pairs flattened, INT32), clip.vision.mm_patch_merge_type,
  clip.vision.image_aspect_ratio; the tower up to LLaVA's vision_feature_layer -2 (the last layer dropped);
  "model.image_newline" (f32); the patch embedding and projector matrices in f16 whatever --use-f32 says.
- The language model: convert_hf_to_gguf.py has no LlavaNextForConditionalGeneration, so (as the docs' note says)
  the language model is exported alone (a LlamaForCausalLM with the tiny SentencePiece tokenizer of
  make_mmproj_fixtures.py, "<image>" at id 159) and converted with --outtype f32.

What it writes (tests/fixtures/vision/llava_next_gguf/):
- text.gguf, mmproj.gguf; config.json (the transformers config the pair came from);
- reference.json: per image (wide.png 50x30: pinpoint 32x64, 1x2 tiles; big.png 70x60: 64x64, 2x2) its size, the
  tile grid, the feature count, "ids" (prompt_ids with <image> expanded to it) and the 8-token greedy
  continuation of LlavaNextForConditionalGeneration.generate; "prompt_ids" (one <image>);
- logits__<image>.npy [T, vocab]: transformers' logits at every position of that image's ids, on the weights
  rounded to f16 exactly where the mmproj stores f16 (patch embedding, projector matrices): the pair's model.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_mmproj_fixtures import IMAGE_TOKEN, train_tokenizer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "tests", "fixtures", "vision")
PINPOINTS = [[32, 64], [64, 32], [64, 64]]  # (height, width), transformers' order
IMAGES = ["wide.png", "big.png"]


def make_model():
    vision = transformers.CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                           num_hidden_layers=2, num_attention_heads=4, layer_norm_eps=1e-5,
                                           hidden_act="quick_gelu")
    text = transformers.LlamaConfig(vocab_size=IMAGE_TOKEN + 1, hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                    max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                    bos_token_id=1, eos_token_id=2)
    config = transformers.LlavaNextConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN,
                                          vision_feature_layer=-2, vision_feature_select_strategy="default",
                                          projector_hidden_act="gelu", image_grid_pinpoints=PINPOINTS)
    torch.manual_seed(24)
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
            # What the mmproj keeps in f16: the 4-D patch embedding and the projector's 2-D matrices.
            if name.endswith("patch_embedding.weight") or ("multi_modal_projector" in name and p.dim() == 2):
                p.copy_(p.to(torch.float16).float())
    return model


def transformers4_state(model):
    """The checkpoint as transformers 4 (before 4.52) saved LLaVA-NeXT, the layout llava_surgery_v2.py reads."""
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("model.vision_tower."):
            k = "vision_tower.vision_model." + k[len("model.vision_tower."):]
        elif k.startswith("model.language_model."):
            k = "language_model.model." + k[len("model.language_model."):]
        elif k == "lm_head.weight":
            k = "language_model.lm_head.weight"
        elif k.startswith("model."):
            k = k[len("model."):]  # multi_modal_projector.*, image_newline
        out[k] = v.contiguous().clone()
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--llama-cpp", required=True, help="llama.cpp source tree (with tools/mtmd/legacy-models)")
    parser.add_argument("--legacy-pythonpath", default="",
                        help="a transformers 4 install for the legacy scripts (pip install --target DIR ...)")
    parser.add_argument("--images", default=os.path.join(FIXTURES, "llava_next"))
    parser.add_argument("--out", default=os.path.join(FIXTURES, "llava_next_gguf"))
    args = parser.parse_args()
    legacy_dir = os.path.join(args.llama_cpp, "tools", "mtmd", "legacy-models")
    env = dict(os.environ, PYTHONPATH=os.path.join(args.llama_cpp, "gguf-py"))
    legacy_env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [args.legacy_pythonpath, env["PYTHONPATH"]])))
    os.makedirs(args.out, exist_ok=True)

    model = make_model()
    model.config.to_json_file(os.path.join(args.out, "config.json"))
    processor = transformers.LlavaNextImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=PINPOINTS)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0

    with tempfile.TemporaryDirectory() as tmp:
        # The language model alone, with a tokenizer, through convert_hf_to_gguf.py.
        llm = os.path.join(tmp, "llm")
        lm = transformers.LlamaForCausalLM(model.config.text_config).float().eval()
        lm.model.load_state_dict(model.model.language_model.state_dict())
        lm.lm_head.load_state_dict(model.lm_head.state_dict())
        lm.save_pretrained(llm, safe_serialization=True)
        train_tokenizer(llm)
        subprocess.run([sys.executable, os.path.join(args.llama_cpp, "convert_hf_to_gguf.py"), llm, "--outtype", "f32",
                        "--outfile", os.path.join(args.out, "text.gguf")], check=True, env=env)

        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=os.path.join(llm, "tokenizer.model"))
        prompt_ids = [1] + sp.encode("user: ") + [IMAGE_TOKEN] + sp.encode("\ndescribe the image. assistant:")

        # The vision side, as llama.cpp's LLaVA 1.6 instructions make it.
        ckpt = os.path.join(tmp, "next")
        os.makedirs(ckpt)
        save_file(transformers4_state(model), os.path.join(ckpt, "model.safetensors"), metadata={"format": "pt"})
        subprocess.run([sys.executable, os.path.join(legacy_dir, "llava_surgery_v2.py"), "-C", "-m", ckpt], check=True,
                       env=legacy_env)
        vit = os.path.join(tmp, "vit")
        os.makedirs(vit)
        shutil.copy(os.path.join(ckpt, "llava.clip"), os.path.join(vit, "pytorch_model.bin"))
        shutil.copy(os.path.join(ckpt, "llava.projector"), os.path.join(vit, "llava.projector"))
        vision = model.config.vision_config.to_dict()
        vision.update(model_type="clip_vision_model", architectures=["CLIPVisionModel"],
                      image_grid_pinpoints=[[w, h] for h, w in PINPOINTS], mm_patch_merge_type="spatial_unpad",
                      image_aspect_ratio="anyres")
        with open(os.path.join(vit, "config.json"), "w") as f:
            json.dump(vision, f, indent=1)
        subprocess.run([sys.executable, os.path.join(legacy_dir, "convert_image_encoder_to_gguf.py"), "-m", vit,
                        "--llava-projector", os.path.join(vit, "llava.projector"), "--output-dir", vit,
                        "--clip-model-is-vision", "--use-f32"], check=True, env=legacy_env)
        shutil.copy(os.path.join(vit, "mmproj-model-f32.gguf"), os.path.join(args.out, "mmproj.gguf"))

    reference = {"image_token_id": IMAGE_TOKEN, "prompt_ids": prompt_ids, "images": {}}
    at = prompt_ids.index(IMAGE_TOKEN)
    for name in IMAGES:
        image = Image.open(os.path.join(args.images, name)).convert("RGB")
        batch = processor(images=[image], return_tensors="pt")
        with torch.no_grad():
            feats = model.model.get_image_features(pixel_values=batch["pixel_values"], image_sizes=batch["image_sizes"],
                                                   vision_feature_layer=-2,
                                                   vision_feature_select_strategy="default").pooler_output[0]
            n = int(feats.shape[0])
            ids = prompt_ids[:at] + [IMAGE_TOKEN] * n + prompt_ids[at + 1:]
            logits = model(input_ids=torch.tensor([ids]), pixel_values=batch["pixel_values"],
                           image_sizes=batch["image_sizes"]).logits[0]
            gen = model.generate(input_ids=torch.tensor([ids]), pixel_values=batch["pixel_values"],
                                 image_sizes=batch["image_sizes"], max_new_tokens=8, do_sample=False)
        np.save(os.path.join(args.out, f"logits__{name}.npy"), logits.numpy().astype(np.float32))
        tiles = int(batch["pixel_values"].shape[1])
        reference["images"][name] = {"width": image.width, "height": image.height, "tiles": tiles,
                                     "image_tokens": n, "ids": ids, "greedy": gen[0, len(ids):].tolist()}
        print(name, "tiles", tiles, "image tokens", n, "greedy", reference["images"][name]["greedy"])
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
