#!/usr/bin/env python3
# scripts/plot-scaling.py: draws the plots of a `strata bench scaling` report (report.json): strong
# scaling (speed-up and efficiency against ranks), weak scaling, throughput against batch, and the
# predicted time breakdown per plan. Exits 3 with a message when matplotlib is missing; the sweep
# then keeps its JSON and says the plots were skipped.
import json
import os
import sys

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError as e:  # the sweep reports this line as the reason
    print(f"matplotlib is not importable ({e}); pip install matplotlib or apt-get install python3-matplotlib")
    sys.exit(3)


def ok(points, kind=None):
    return [p for p in points if p["status"] == "ok" and (kind is None or p["kind"] == kind)]


def main(report_path, out):
    r = json.load(open(report_path))
    points = r["points"]
    written = []

    def save(fig, name):
        path = os.path.join(out, name)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    # Strong scaling: one line per workload (batch, prompt, output), over plans sorted by ranks.
    rows = r.get("strong_scaling", [])
    if rows:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        groups = {}
        for row in rows:
            groups.setdefault((row["batch"], row["prompt_len"], row["output_len"]), []).append(row)
        for (b, l, o), g in sorted(groups.items()):
            g.sort(key=lambda x: (x["ranks"], x["plan"]))
            x = [f'{x["plan"]}\n({x["ranks"]})' for x in g]
            a1.plot(x, [x["speedup"] for x in g], "o-", label=f"batch {b}, prompt {l}, out {o}")
            a2.plot(x, [x["efficiency"] for x in g], "o-", label=f"batch {b}")
            if all("predicted_speedup" in x for x in g):
                a1.plot(x, [x["predicted_speedup"] for x in g], "x--", color=a1.lines[-1].get_color(), alpha=0.6)
        a1.set_title("strong scaling: decode speed-up (x = predicted)")
        a1.set_ylabel("speed-up vs 1 rank")
        a2.set_title("parallel efficiency")
        a2.set_ylabel("speed-up / ranks")
        a2.axhline(1.0, color="grey", lw=0.5)
        a1.legend(fontsize=7)
        save(fig, "strong-scaling.png")

    rows = r.get("weak_scaling", [])
    if rows:
        fig, ax = plt.subplots(figsize=(6, 4))
        rows.sort(key=lambda x: (x["ranks"], x["plan"]))
        ax.plot([f'{x["plan"]}\n({x["ranks"]})' for x in rows], [x["efficiency"] for x in rows], "o-")
        ax.axhline(1.0, color="grey", lw=0.5)
        ax.set_title("weak scaling: batch = ranks x k")
        ax.set_ylabel("tokens/s / (ranks x 1-rank tokens/s)")
        save(fig, "weak-scaling.png")

    pts = ok(points, "sweep")
    if pts:
        fig, ax = plt.subplots(figsize=(6, 4))
        for plan in sorted({p["plan"] for p in pts}):
            g = sorted([p for p in pts if p["plan"] == plan], key=lambda p: p["batch"])
            ax.plot([p["batch"] for p in g], [p["measured"]["decode_tokens_per_s"] for p in g], "o-", label=plan)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch (sequences)")
        ax.set_ylabel("decode tokens/s")
        ax.set_title("throughput against batch")
        ax.legend(fontsize=7)
        save(fig, "throughput-vs-batch.png")

        # Breakdown at each plan's largest batch: predicted terms stacked, the measured step beside.
        last = {}
        for p in pts:
            if "predicted" in p and (p["plan"] not in last or p["batch"] > last[p["plan"]]["batch"]):
                last[p["plan"]] = p
        if last:
            fig, ax = plt.subplots(figsize=(7, 4))
            names = sorted(last, key=lambda n: (last[n]["ranks"], n))
            terms = [("compute_ms", "compute"), ("allreduce_exposed_ms", "all-reduce (exposed)"),
                     ("p2p_ms", "send/recv"), ("bubble_ms", "pipeline bubble"), ("stream_ms", "weight streaming"),
                     ("overhead_ms", "step overhead")]
            bottom = [0.0] * len(names)
            for key, label in terms:
                v = [last[n]["predicted"]["decode_step"][key] for n in names]
                ax.bar(names, v, bottom=bottom, label=f"{label} (predicted)")
                bottom = [b + x for b, x in zip(bottom, v)]
            ax.plot(names, [last[n]["measured"]["ms_per_step"] for n in names], "k*", ms=12, label="measured step")
            ax.set_ylabel("ms per decode step")
            ax.set_title("time breakdown per plan (largest batch)")
            ax.legend(fontsize=7)
            save(fig, "time-breakdown.png")
    print("wrote " + ", ".join(os.path.basename(w) for w in written) if written else "no ok points to plot")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot-scaling.py REPORT.json OUT_DIR")
    main(sys.argv[1], sys.argv[2])
