#!/usr/bin/env python3
# scripts/plot-scaling.py: draws the plots of a `strata bench scaling` report (report.json): strong
# scaling (speed-up and efficiency against ranks), weak scaling, throughput against batch, the time
# breakdown per plan (measured beside predicted) and memory per tier. Exits 3 with a message when matplotlib is missing; the sweep
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

        # Breakdown at each plan's largest batch: measured (rank 0's decode steps) stacked on the
        # left, the performance model's terms on the right.
        last = {}
        for p in pts:
            if p["plan"] not in last or p["batch"] > last[p["plan"]]["batch"]:
                last[p["plan"]] = p
        names = sorted(last, key=lambda n: (last[n]["ranks"], n))
        measured = [n for n in names if "breakdown" in last[n]["measured"]]
        predicted = [n for n in names if "predicted" in last[n]]
        if measured or predicted:
            fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
            if measured:
                b = {n: last[n]["measured"]["breakdown"] for n in measured}
                # Hidden communication ran under compute, so it is drawn as the part of the compute bar
                # it overlapped: the stack still adds up to the step.
                terms = [("compute (nothing in flight)", lambda x: max(0.0, x["compute_ms"] - x["comm_hidden_ms"])),
                         ("compute with comm hidden under it", lambda x: min(x["compute_ms"], x["comm_hidden_ms"])),
                         ("communication (exposed)", lambda x: x["comm_exposed_ms"]),
                         ("weight streaming (wait)", lambda x: x["stream_wait_ms"]),
                         ("sampling + scheduling", lambda x: x["sample_ms"] + x["schedule_ms"])]
                bottom = [0.0] * len(measured)
                for label, f in terms:
                    v = [f(b[n]) for n in measured]
                    a1.bar(measured, v, bottom=bottom, label=label)
                    bottom = [x + y for x, y in zip(bottom, v)]
                for i, n in enumerate(measured):
                    h = b[n].get("comm_hidden_fraction")
                    if h is not None:
                        a1.annotate(f"{100 * h:.0f}% hidden", (i, bottom[i]), ha="center", va="bottom", fontsize=7)
                a1.set_title("measured (rank 0, decode steps)")
                a1.set_ylabel("ms per decode step")
                a1.legend(fontsize=7)
            if predicted:
                terms = [("compute_ms", "compute"), ("allreduce_exposed_ms", "all-reduce (exposed)"),
                         ("p2p_ms", "send/recv"), ("bubble_ms", "pipeline bubble"), ("stream_ms", "weight streaming"),
                         ("overhead_ms", "step overhead")]
                bottom = [0.0] * len(predicted)
                for key, label in terms:
                    v = [last[n]["predicted"]["decode_step"][key] for n in predicted]
                    a2.bar(predicted, v, bottom=bottom, label=label)
                    bottom = [x + y for x, y in zip(bottom, v)]
                a2.plot(predicted, [last[n]["measured"]["ms_per_step"] for n in predicted], "k*", ms=12,
                        label="measured step")
                a2.set_title("predicted (performance model)")
                a2.legend(fontsize=7)
            fig.suptitle("time breakdown per plan (largest batch)")
            save(fig, "time-breakdown.png")

        # Memory per tier of rank 0 at each plan's largest batch.
        mem = [n for n in names if "memory" in last[n]["measured"]]
        if mem:
            fig, ax = plt.subplots(figsize=(7, 4))
            terms = [("weights_device_bytes", "weights on device"), ("weights_host_bytes", "weights in host memory"),
                     ("weights_disk_bytes", "weights on disk"), ("stream_ring_bytes", "streaming ring"),
                     ("kv_bytes", "KV cache")]
            bottom = [0.0] * len(mem)
            for key, label in terms:
                v = [last[n]["measured"]["memory"][key] / 2**20 for n in mem]
                ax.bar(mem, v, bottom=bottom, label=label)
                bottom = [x + y for x, y in zip(bottom, v)]
            ax.set_ylabel("MiB (rank 0)")
            ax.set_title("memory per tier (largest batch)")
            ax.legend(fontsize=7)
            save(fig, "memory-per-tier.png")
    print("wrote " + ", ".join(os.path.basename(w) for w in written) if written else "no ok points to plot")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot-scaling.py REPORT.json OUT_DIR")
    main(sys.argv[1], sys.argv[2])
