#!/usr/bin/env python3
"""Writes the tokenizer fixtures of tests/runtime/tokenizer from Hugging Face `tokenizers` and
`sentencepiece` (the references; strata's tokenizer code plays no part in the expected ids).

  /opt/refenv/bin/python tools/reference/make_tokenizer_fixtures.py \
      [--models /work/shared/models] [--out tests/fixtures/tokenizer] [--synthetic-dir DIR]

(a) stories260K.json: ids of TEXTS from tokenizer.json (tokenizers), tokenizer.model (sentencepiece) and
    sentencepiece with remove_extra_whitespaces switched off (what llama2.c run.c does with tok512.bin).
(b) bpe_{gpt2,llama3,qwen2}/tokenizer.json: byte-level BPE tokenizers trained here on text written here,
    plus bpe_{...}.json with the ids and decodes of BPE_TEXTS.
(c) with --synthetic-dir (holding synthetic_512/ and synthetic_32000/ tokenizer.json files written by
    strata's write_tokenizer_json; the tokenizer tests write them to $STRATA_TEST_TMP/tokenizer), the ids
    `tokenizers` gives for TEXTS with those files, in synthetic.json.
"""
import argparse
import json
import os

import sentencepiece as spm
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

TEXTS = [
    "Once upon a time",
    "Once upon a time, there was a little girl named Lily.",
    "She said, \"I'm sorry, mom. I didn't know what to do.\"",
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "a  b   c    d",
    "  leading spaces",
    "trailing spaces   ",
    "tab\tseparated\tvalues",
    "line one\nline two\n\nline four",
    "windows\r\nline endings",
    "1234567890 and 3.14159 and 42",
    "Numbers: 1, 22, 333, 4444, 55555.",
    "punctuation!?;:-- (brackets) [square] {curly} <angle>",
    "emoji: \U0001F600 \U0001F389 \u2764\ufe0f",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "\u4e2d\u6587\u5b57\u7b26\u6d4b\u8bd5",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber \u00e7a",
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u03ba\u03b1\u03b9 \u0420\u0443\u0441\u0441\u043a\u0438\u0439 \u044f\u0437\u044b\u043a",
    "e\u0301 combining accent",
    "mixed: Tim's dog \u2014 \u201cquoted\u201d \u2026 end",
    "x",
    " ",
    "",
    "\n",
    "UPPER CASE AND lower case",
    "http://example.com/path?query=1&x=2",
    "def f(x):\n    return x * 2",
    "The sun was shining and the birds were singing in the big green tree.",
    "\u00a0non-breaking\u3000ideographic space",
    "Tom and Sue went to the park. They played with a ball!",
]

BPE_TEXTS = TEXTS + [
    "I'm here, you're there, they'LL come, WE'VE gone, it'S fine, DON'T",
    "12345678 digits 1 12 123 1234",
    "fullwidth \uff11\uff12\uff13 arabic \u0663\u0664 roman \u216b super x\u00b2",
    "   \n\n   indented\n",
    "trailing newline\n\n",
    "!!!???...",
    "'quoted' and 'tis",
]

LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
QWEN2_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA3_TEXTS = BPE_TEXTS + [
    "<|start_header_id|>user<|end_header_id|>\n\nHi there!<|eot_id|>",
    "<|begin_of_text|>already has bos",
]
QWEN2_TEXTS = BPE_TEXTS + [
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
    "call <tool_call>{\"name\": \"f\"}</tool_call> done",
]

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                  r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")


def training_corpus():
    """Deterministic text written for these fixtures: English sentences from a small grammar plus
    lines in other scripts, numbers and code, so merges cover more than ASCII letters."""
    subjects = ["the cat", "a little girl", "my old friend", "the teacher", "our neighbor", "the small dog",
                "Tom", "Sue", "the children", "a tired sailor"]
    verbs = ["found", "wanted", "painted", "carried", "watched", "didn't like", "couldn't see", "remembered"]
    objects = ["a red ball", "the big tree", "some bread", "the blue boat", "a shiny stone", "the garden",
               "three apples", "the quiet harbor"]
    endings = [".", "!", "?", " today.", " again.", ", and then it rained.", " in 1999.", " at 10:30."]
    lines = []
    for i in range(600):
        s = subjects[i % len(subjects)]
        v = verbs[(i * 3) % len(verbs)]
        o = objects[(i * 7) % len(objects)]
        e = endings[(i * 5) % len(endings)]
        line = f"{s} {v} {o}{e}"
        lines.append(line[0].upper() + line[1:])
    lines += [
        "It's a sunny day; we're going out, aren't we? I'll bring 2 hats and 15 sandwiches.",
        "Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, \u00fcber na\u00efve fa\u00e7ade.",
        "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u03ba\u03b5\u03af\u03bc\u03b5\u03bd\u03bf \u03b3\u03b9\u03b1 \u03b4\u03bf\u03ba\u03b9\u03bc\u03ae.",
        "\u0420\u0443\u0441\u0441\u043a\u0438\u0439 \u0442\u0435\u043a\u0441\u0442 \u0434\u043b\u044f \u043f\u0440\u043e\u0432\u0435\u0440\u043a\u0438.",
        "\u65e5\u672c\u8a9e\u306e\u6587\u7ae0\u3067\u3059\u3002\u4e2d\u6587\u4e5f\u53ef\u4ee5\u3002",
        "def add(a, b):\n    return a + b\n\nprint(add(1, 2))",
        "Numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000 2024 3.14 42",
    ] * 20
    return lines


def train_byte_bpe(pattern, special, added, bos, ignore_merges):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=pattern is None)
    if pattern is None:
        tok.pre_tokenizer = byte_level
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False), byte_level])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, min_frequency=1, show_progress=False,
                                  special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    if added:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in added])
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def sentencepiece_without_whitespace_removal(model_bytes):
    """The same ModelProto with normalizer_spec.remove_extra_whitespaces = false appended (protobuf
    keeps the last value of a repeated scalar field), so sentencepiece encodes as llama2.c does."""
    def varint(data, pos):
        value, shift = 0, 0
        while True:
            b = data[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value, pos

    def encode_varint(value):
        out = bytearray()
        while True:
            b = value & 0x7F
            value >>= 7
            out.append(b | (0x80 if value else 0))
            if not value:
                return bytes(out)

    out, pos = bytearray(), 0
    while pos < len(model_bytes):
        start = pos
        key, pos = varint(model_bytes, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = varint(model_bytes, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, body = varint(model_bytes, pos)
            pos = body + length
            if field == 3:
                payload = model_bytes[body:pos] + bytes([0x20, 0x00])
                out += encode_varint(key) + encode_varint(len(payload)) + payload
                continue
        else:
            raise ValueError(f"wire type {wire}")
        out += model_bytes[start:pos]
    return bytes(out)


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=None, separators=(",", ":"))
        f.write("\n")


def stories_fixture(models_dir):
    hf_dir = os.path.join(models_dir, "stories260K-hf")
    hf = Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json"))
    with open(os.path.join(hf_dir, "tokenizer.model"), "rb") as f:
        model_bytes = f.read()
    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    raw = spm.SentencePieceProcessor(model_proto=sentencepiece_without_whitespace_removal(model_bytes))
    cases = []
    for text in TEXTS:
        hf_ids = hf.encode(text).ids
        cases.append({
            "text": text,
            "hf_ids": hf_ids,
            "hf_decoded": hf.decode(hf_ids, skip_special_tokens=True),
            "sp_ids": [sp.bos_id()] + sp.encode(text),
            "sp_raw_ids": [raw.bos_id()] + raw.encode(text),
        })
    return {"source": "tokenizers %s on stories260K-hf/tokenizer.json; sentencepiece %s on tokenizer.model"
                      % (__import__("tokenizers").__version__, spm.__version__), "cases": cases}


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=os.path.join(os.path.dirname(root), "shared", "models"))
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures", "tokenizer"))
    ap.add_argument("--synthetic-dir", default=None)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    write_json(os.path.join(args.out, "stories260K.json"), stories_fixture(args.models))

    configs = {
        "gpt2": (None, ["<|endoftext|>"], [], None, False, BPE_TEXTS),
        "llama3": (LLAMA3_PATTERN, LLAMA3_SPECIAL, [], "<|begin_of_text|>", True, LLAMA3_TEXTS),
        "qwen2": (QWEN2_PATTERN, QWEN2_SPECIAL, ["<tool_call>", "</tool_call>"], None, False, QWEN2_TEXTS),
    }
    for name, (pattern, special, added, bos, ignore_merges, texts) in configs.items():
        tok = train_byte_bpe(pattern, special, added, bos, ignore_merges)
        folder = os.path.join(args.out, f"bpe_{name}")
        os.makedirs(folder, exist_ok=True)
        tok.save(os.path.join(folder, "tokenizer.json"))
        tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))  # what the test loads
        # The split regex alone (raw words, before the byte alphabet), for the pre-tokenizer tests.
        splitter = pre_tokenizers.Split(Regex(pattern or GPT2_PATTERN), behavior="isolated", invert=False)
        cases = []
        for text in texts:
            ids = tok.encode(text).ids
            words = [w for w, _ in splitter.pre_tokenize_str(text)]
            cases.append({"text": text, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=True),
                          "words": words})
        write_json(os.path.join(args.out, f"bpe_{name}.json"),
                   {"source": f"tokenizers {__import__('tokenizers').__version__}, bpe_{name}/tokenizer.json",
                    "cases": cases})

    if args.synthetic_dir:
        out = {"source": "tokenizers on strata write_tokenizer_json(make_synthetic_tokenizer(n))"}
        for n in (512, 32000):
            tok = Tokenizer.from_file(os.path.join(args.synthetic_dir, f"synthetic_{n}", "tokenizer.json"))
            out[str(n)] = [{"text": t, "ids": tok.encode(t).ids,
                            "decoded": tok.decode(tok.encode(t).ids, skip_special_tokens=True)} for t in TEXTS]
        write_json(os.path.join(args.out, "synthetic.json"), out)


if __name__ == "__main__":
    main()
