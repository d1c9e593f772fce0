#!/usr/bin/env python3
"""Compares two `strata logits --all` outputs (JSON) of the same ids, on one line: at how many positions the
argmax agrees, the largest absolute difference against the logits' spread, and at the disagreements how close
the reference's top two were (a near tie that bf16 reordering flips, or a real fault). With TOL it also gives
a verdict and exits 1 when the largest difference exceeds TOL or the argmax parts where the reference's top
two are more than TOL apart, so a near tie cannot fail it and a real divergence cannot pass.
Usage: compare_logits.py REFERENCE.json OTHER.json [TOL]"""
import json
import math
import sys


def main():
    if len(sys.argv) not in (3, 4):
        print(__doc__.strip().splitlines()[-1])
        return 2
    with open(sys.argv[1]) as f:
        ref = json.load(f)
    with open(sys.argv[2]) as f:
        other = json.load(f)
    tol = float(sys.argv[3]) if len(sys.argv) == 4 else None
    if ref["ids"] != other["ids"] or len(ref["logits"]) != len(other["logits"]):
        print("FAIL: the two files score different ids")
        return 1
    worst, agree, margins, parted = 0.0, 0, [], []
    values = [x for row in ref["logits"] for x in row]
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((x - mean) ** 2 for x in values) / len(values))
    for pos, (a, b) in enumerate(zip(ref["logits"], other["logits"])):
        worst = max(worst, max(abs(x - y) for x, y in zip(a, b)))
        order = sorted(range(len(a)), key=lambda i: -a[i])
        if max(range(len(b)), key=lambda i: b[i]) == order[0]:
            agree += 1
            continue
        margin = a[order[0]] - a[order[1]]
        margins.append(margin)
        if tol is not None and margin > tol:
            parted.append(pos)
    line = (f"argmax equal at {agree}/{len(ref['logits'])} positions, max |dlogit| {worst:.4f} "
            f"(logit std {spread:.3f})")
    if margins:
        line += f", reference top-2 margin there <= {max(margins):.4f}"
    if tol is None:
        print(line)
        return 0
    ok = worst <= tol and not parted
    print(f"{'ok' if ok else 'FAIL'} (tolerance {tol}): {line}"
          + (f"; argmax parts beyond the tolerance at {parted}" if parted else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
