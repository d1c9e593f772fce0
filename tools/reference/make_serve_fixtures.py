#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/stories260K_token_texts.json: the text each token of the stories260K
tokenizer adds after a word, as Hugging Face `tokenizers` decodes it (strata's tokenizer code plays no
part). The serve tests compare the logprobs' token strings (leading spaces kept) with it.

  python3 -m venv /tmp/tok && /tmp/tok/bin/pip install tokenizers
  /tmp/tok/bin/python tools/reference/make_serve_fixtures.py [--models /work/shared/models] [--out tests/fixtures/tokenizer]

For every id: texts[id] = decode([ONCE, id]) minus the prefix decode([ONCE]) ("Once"), where ONCE is
the id of the piece "\u2581Once", so every token is read mid-text; null for control tokens (<unk>,
<s>, </s>), which decode to nothing. Byte-fallback pieces that are not a whole character decode to U+FFFD, as in `tokenizers`.
"""
import argparse
import json
import os

from tokenizers import Tokenizer, __version__ as tokenizers_version


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="/work/shared/models")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "../../tests/fixtures/tokenizer"))
    args = ap.parse_args()
    tok = Tokenizer.from_file(os.path.join(args.models, "stories260K-hf", "tokenizer.json"))
    once = tok.token_to_id("\u2581Once")
    prefix = tok.decode([once])
    texts = []
    for i in range(tok.get_vocab_size()):
        piece = tok.id_to_token(i)
        if piece in ("<unk>", "<s>", "</s>"):
            texts.append(None)
            continue
        full = tok.decode([once, i], skip_special_tokens=False)
        assert full.startswith(prefix), (i, piece, full)
        texts.append(full[len(prefix):])
    out = {
        "source": "tokenizers %s on stories260K-hf/tokenizer.json: decode([%d, id]) minus decode([%d])"
        % (tokenizers_version, once, once),
        "after_id": once,
        "space_id": tok.token_to_id("\u2581"),
        "texts": texts,
    }
    path = os.path.join(args.out, "stories260K_token_texts.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
