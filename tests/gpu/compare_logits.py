#!/usr/bin/env python3
"""Compares two `strata logits --all` outputs (JSON) of the same ids: the largest absolute difference over
every position and token, and the positions whose argmax differs although the first file's top two logits
are more than TOL apart. Exit status 1 when either check fails, so a near tie cannot fail it and a real
divergence cannot pass.
Usage: compare_logits.py REFERENCE.json OTHER.json TOL"""
import json
import sys


def main():
    if len(sys.argv) != 4:
        print(__doc__.strip().splitlines()[-1])
        return 2
    with open(sys.argv[1]) as f:
        ref = json.load(f)
    with open(sys.argv[2]) as f:
        other = json.load(f)
    tol = float(sys.argv[3])
    if ref["ids"] != other["ids"] or len(ref["logits"]) != len(other["logits"]):
        print("FAIL: the two files score different ids")
        return 1
    worst, parted = 0.0, []
    for pos, (a, b) in enumerate(zip(ref["logits"], other["logits"])):
        worst = max(worst, max(abs(x - y) for x, y in zip(a, b)))
        order = sorted(range(len(a)), key=lambda i: -a[i])
        top_b = max(range(len(b)), key=lambda i: b[i])
        if top_b != order[0] and a[order[0]] - a[order[1]] > tol:
            parted.append(pos)
    ok = worst <= tol and not parted
    print(f"{'ok' if ok else 'FAIL'}: max |diff| {worst:.2e} over {len(ref['logits'])} positions (tolerance {tol}); "
          f"argmax parts beyond the tolerance at {parted if parted else 'no position'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
