#!/usr/bin/env python3
"""SmolLM's pre-tokenizer split (Digits(individual_digits) then the GPT-2 regex, as its tokenizer.json and
llama.cpp's "smollm" pre type do it), computed by Hugging Face `tokenizers`, for
tests/runtime/tokenizer/tokenizer_reference_test.cpp. Needs the tokenizers package; no model, no network.

    python3 tools/reference/make_smollm_split_fixture.py   # writes tests/fixtures/tokenizer/smollm_split.json
"""
import json
import os

import tokenizers
from tokenizers import Regex, pre_tokenizers

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
TEXTS = [
    "Once upon a time",
    "In 1984, 2 cats ate 365 fish.",
    "pi is 3.14159 and e is 2.71828",
    "room 42b, floor 7 ",
    "x  12   y",
    "  9 lives\n\n10 more",
    "superscript x² and roman Ⅷ, Arabic-Indic ٣٤ and fullwidth ７",
    "it's 5 o'clock, we'll be there at 10:30!",
    "tabs\t1\t2\tthree",
    "emoji 🙂 3 times",
]


def main():
    splitter = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated", invert=False),
    ])
    cases = [{"text": t, "words": [w for w, _ in splitter.pre_tokenize_str(t)]} for t in TEXTS]
    out = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "tokenizer", "smollm_split.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"source": f"tokenizers {tokenizers.__version__}: Digits(individual_digits) + GPT-2 split",
                   "cases": cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
