#!/usr/bin/env python3
"""Medians and ranges of wall time and peak RSS from run.sh's logs: summarize.py LOGDIR LABEL..."""
import re, statistics, sys, glob, os

def parse(path):
    text = open(path).read()
    walls = re.findall(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", text)
    secs = [int(h or 0) * 3600 + int(m) * 60 + float(s) for h, m, s in walls]
    rss = [int(x) / 1e6 for x in re.findall(r"Maximum resident set size \(kbytes\): (\d+)", text)]
    ids = re.findall(r"^ids: (.*)$", text, re.M)
    return secs, rss, ids

def fmt(v):
    return f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})"

logdir = sys.argv[1]
for label in sys.argv[2:]:
    for kind in ("single", "pp2"):
        wall, r0, r1, ids = [], [], [], set()
        for path in sorted(glob.glob(os.path.join(logdir, f"{label}-{kind}-*.log"))):
            secs, rss, got = parse(path)
            ids.update(got)
            if kind == "single":
                wall.append(secs[-1]); r0.append(rss[-1])
            else:  # two ranks' own lines (in either order), then mpirun's; rank peaks sorted low, high
                wall.append(secs[-1]); lo, hi = sorted(rss[:2]); r0.append(lo); r1.append(hi)
        if not wall:
            continue
        rss_text = fmt(r0) if kind == "single" else f"{fmt(r0)} / {fmt(r1)}"
        print(f"{label:6s} {kind:6s} n={len(wall)} wall s {fmt(wall)}  peak RSS GB {rss_text}  distinct ids {len(ids)}")
