#!/usr/bin/env python3
"""Makes tests/fixtures/vision/llava_gguf/: the tiny LLaVA of tests/fixtures/vision/llava_t5 as the GGUF pair
llama.cpp users hold (a text-model GGUF plus an mmproj GGUF), written by llama.cpp's own converters, with the
transformers logits of the same weights.

Needs numpy, torch, transformers (5.x), safetensors, sentencepiece, a llama.cpp source tree (its
convert_hf_to_gguf.py, gguf-py, and tools/mtmd/legacy-models/convert_image_encoder_to_gguf.py), and a
transformers 4 install for that legacy converter (`pip install --target /tmp/tf4 'transformers==4.57.*'`). Run:
    python3 tools/reference/make_mmproj_fixtures.py --llama-cpp /path/to/llama.cpp --legacy-pythonpath /tmp/tf4
(--text-converter-dir DIR takes convert_hf_to_gguf.py and gguf-py from another llama.cpp tree.)

How llama.cpp converts a LLaVA-1.5 checkpoint (its docs/multimodal/llava.md):
- the language model: convert_hf_to_gguf.py (LlavaForConditionalGeneration -> a "llama" GGUF; q/k rows permuted
  to the adjacent-pair RoPE layout). It needs a tokenizer, which the tiny fixture lacks: this script trains a
  tiny SentencePiece model (158 pieces) and declares id 159 "<image>" (the fixture's image_token_index) in
  added_tokens.json, so the GGUF's vocabulary names the image placeholder.
- the vision tower and projector: convert_hf_to_gguf.py --mmproj handles LlavaForConditionalGeneration only for
  Pixtral towers (it refuses a CLIP one), so LLaVA-1.5 goes through the legacy
  tools/mtmd/legacy-models/convert_image_encoder_to_gguf.py: the tower saved as a CLIPVisionModel directory plus
  the projector as llava.projector (what llava_surgery_v2.py produces), converted with --use-f32. That writes
  clip.* keys and v.* / mm.* tensors, drops the tower's last layer (block_count = layers - 1: LLaVA's
  vision_feature_layer -2), stores the 4-D patch embedding and the 2-D projector weights in f16 whatever
  --use-f32 says, and names fc1 "ffn_down" and fc2 "ffn_up" (llama.cpp's loader swaps them back).

What it writes (tests/fixtures/vision/llava_gguf/):
- text.gguf (f32), mmproj.gguf (f32 except the tensors above);
- logits.npy [T, vocab]: transformers' LlavaForConditionalGeneration over llava_t5's ids.json "ids" and
  image.png, with llava_t5's weights rounded to f16 exactly where the mmproj stores f16 (the patch embedding
  and the projector matrices): the model the GGUF pair holds. ids.json is llava_t5's.
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
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "tests", "fixtures", "vision")
IMAGE_TOKEN = 159

CORPUS = """the quick brown fox jumps over the lazy dog. a picture shows a red square and a blue circle.
describe the image in one sentence. what colour is the shape on the left? there is a black line across it.
the sky is bright, the grass is green, and a small cat sleeps under the old wooden table by the window.
user: look at this picture. assistant: it shows two shapes on a gradient background with some noise."""


def train_tokenizer(out_dir):
    import sentencepiece as spm
    corpus = os.path.join(out_dir, "corpus.txt")
    with open(corpus, "w") as f:
        for _ in range(20):
            f.write(CORPUS + "\n")
    spm.SentencePieceTrainer.train(input=corpus, model_prefix=os.path.join(out_dir, "tokenizer"),
                                   vocab_size=IMAGE_TOKEN - 1, model_type="bpe", character_coverage=1.0,
                                   hard_vocab_limit=False, bos_id=1, eos_id=2, unk_id=0, pad_id=-1)
    os.remove(corpus)
    os.remove(os.path.join(out_dir, "tokenizer.vocab"))
    with open(os.path.join(out_dir, "added_tokens.json"), "w") as f:
        json.dump({"<image>": IMAGE_TOKEN}, f)


def rounded_model(src):
    """llava_t5 with the tensors the mmproj keeps in f16 rounded to f16 (computed in f32)."""
    model = transformers.LlavaForConditionalGeneration.from_pretrained(src, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            f16 = name.endswith("patch_embedding.weight") or ("multi_modal_projector" in name and p.dim() == 2)
            if f16:
                p.copy_(p.to(torch.float16).float())
    return model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--llama-cpp", required=True, help="llama.cpp source tree (with tools/mtmd/legacy-models)")
    parser.add_argument("--text-converter-dir", default=None,
                        help="directory of convert_hf_to_gguf.py and gguf-py (default: --llama-cpp)")
    parser.add_argument("--legacy-pythonpath", default="",
                        help="a transformers 4 install for the legacy mmproj converter (pip install --target DIR "
                             "'transformers<5')")
    parser.add_argument("--out", default=os.path.join(FIXTURES, "llava_gguf"))
    args = parser.parse_args()
    text_dir = args.text_converter_dir or args.llama_cpp
    legacy = os.path.join(args.llama_cpp, "tools", "mtmd", "legacy-models", "convert_image_encoder_to_gguf.py")
    env = dict(os.environ, PYTHONPATH=os.path.join(text_dir, "gguf-py"))
    src = os.path.join(FIXTURES, "llava_t5")
    os.makedirs(args.out, exist_ok=True)

    model = rounded_model(src)
    with open(os.path.join(src, "ids.json")) as f:
        ids = json.load(f)["ids"]
    pv = torch.from_numpy(np.load(os.path.join(src, "pixel_values.npy")))[None]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), pixel_values=pv).logits[0]
    np.save(os.path.join(args.out, "logits.npy"), logits.numpy().astype(np.float32))

    with tempfile.TemporaryDirectory() as tmp:
        # The language model: the whole LLaVA checkpoint plus a tokenizer, through convert_hf_to_gguf.py.
        hf = os.path.join(tmp, "hf")
        model.save_pretrained(hf, safe_serialization=True)
        train_tokenizer(hf)
        subprocess.run([sys.executable, os.path.join(text_dir, "convert_hf_to_gguf.py"), hf, "--outtype", "f32",
                        "--outfile", os.path.join(args.out, "text.gguf")], check=True, env=env)

        # The mmproj: the tower as a CLIPVisionModel directory and the projector file, as llava_surgery_v2.py
        # leaves them, through the legacy image-encoder converter.
        # The converter loads transformers 4's CLIPVisionModel (it edits model.vision_model), so the tower is
        # written in that layout and the converter runs with --legacy-pythonpath's transformers 4.
        clip = os.path.join(tmp, "clip")
        os.makedirs(clip)
        state = {"vision_model." + k: v.contiguous() for k, v in model.model.vision_tower.state_dict().items()}
        save_file(state, os.path.join(clip, "model.safetensors"), metadata={"format": "pt"})
        vision = model.config.vision_config.to_dict()
        vision.update(model_type="clip_vision_model", architectures=["CLIPVisionModel"])
        with open(os.path.join(clip, "config.json"), "w") as f:
            json.dump(vision, f, indent=1)
        projector = {"multi_modal_projector." + k: v.clone() for k, v in
                     model.model.multi_modal_projector.state_dict().items()}
        torch.save(projector, os.path.join(clip, "llava.projector"))
        legacy_env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [args.legacy_pythonpath, env["PYTHONPATH"]])))
        subprocess.run([sys.executable, legacy, "-m", clip, "--clip-model-is-vision", "--llava-projector",
                        os.path.join(clip, "llava.projector"), "--use-f32", "--output-dir", clip], check=True,
                       env=legacy_env)
        shutil.copy(os.path.join(clip, "mmproj-model-f32.gguf"), os.path.join(args.out, "mmproj.gguf"))

    print("wrote", args.out, "logits", tuple(logits.shape))


if __name__ == "__main__":
    main()
