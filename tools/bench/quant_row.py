#!/usr/bin/env python3
"""One row of the CPU quantized-weight benchmarks (scripts/bench-quant.sh, scripts/bench-quant-pure.sh): the
median of each tool's runs with their range. The callers alternate the tools run by run so that all of them see
the same load.

Usage: quant_row.py TYPE THREADS FILE_BYTES STRATA_RUNS LLAMA_RUNS BASE_RUNS
  *_RUNS: JSON lists of `strata bench decode` results (STRATA, BASE: a second strata binary, the before column;
  may be empty) and of llama-bench -o json outputs (LLAMA).
Prints the row as one JSON object.
"""
import json
import statistics
import sys


def main():
    t, threads, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    runs, llama_runs, base_runs = (json.loads(a) for a in sys.argv[4:7])
    row = {"type": t, "threads": threads, "file_bytes": size, "runs": len(runs),
           "weight_bytes": runs[0]["weight_bytes_per_step"]}

    def put(key, values):  # the median of the runs, and their spread
        if values:
            row[key], row[key + "_min"], row[key + "_max"] = statistics.median(values), min(values), max(values)

    put("strata_tg", [r["decode_tokens_per_s"] for r in runs])
    put("strata_pp", [r["prefill_tokens_per_s"] for r in runs])
    put("read_gbs", [r["read_gbs"] for r in runs + base_runs])  # the machine's, measured beside each run
    put("base_tg", [r["decode_tokens_per_s"] for r in base_runs])
    put("base_pp", [r["prefill_tokens_per_s"] for r in base_runs])
    put("llama_tg", [r["avg_ts"] for lr in llama_runs for r in lr if r.get("n_gen", 0) > 0])
    put("llama_pp", [r["avg_ts"] for lr in llama_runs for r in lr if r.get("n_prompt", 0) > 0])
    row["strata_weight_gbs"] = row["strata_tg"] * row["weight_bytes"] / 1e9
    if "llama_tg" in row:
        row["llama_weight_gbs"] = row["llama_tg"] * row["weight_bytes"] / 1e9
    print(json.dumps(row))


if __name__ == "__main__":
    main()
