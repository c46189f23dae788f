#!/usr/bin/python3
"""Renders a merged `longctx run --trace` file (Chrome trace events, docs/observability.md) as a
picture: ranks as rows (the main thread, and under it the KV cache's background thread),
phases as coloured bars. Nested spans are drawn parents first, so a layer's
"attention" bar shows through only where its halo / global exchange / kernel / merge parts
leave gaps; prefill and answer are outlined.

  python3 bench/plot_trace.py trace.json trace.png [--layer L]

Three panels: the whole run; one prefill layer (L, default the middle one); the decode steps.
Also prints, per rank, the self seconds of each span (less its children), and each rank's wait
(halo_wait + global_exchange + partials_exchange + decode exchanges) as a share of the prefill.
Needs python3-matplotlib (Debian)."""
import argparse
import json
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Colours by span name: communication in reds/oranges, attention kernels in blues, dense in
# greens, the KV cache in purples/browns.
COLORS = {
    "embed": "#a1d99b",
    "qkv_projection": "#31a354",
    "out_proj_mlp": "#006d2c",
    "halo_post": "#fdae6b",
    "global_exchange": "#e6550d",
    "halo_wait": "#fd8d3c",
    "partials_exchange": "#a63603",
    "attn_interior": "#6baed6",
    "attn_edges": "#3182bd",
    "attn_global_partial": "#08519c",
    "merge": "#9ecae1",
    "kv_append": "#9e9ac8",
    "kv_load": "#756bb1",
    "kv_prefetch": "#54278f",
    "kv_demote": "#8c6d31",
    "decode_qkv": "#74c476",
    "decode_query_exchange": "#fc9272",
    "decode_attention": "#4292c6",
    "decode_partials_exchange": "#de2d26",
    "decode_merge_mlp": "#238b45",
    "attention": "#c6dbef",
    "load": "#d9d9d9",
    "write_outputs": "#969696",
}
WAIT = {"halo_wait", "global_exchange", "partials_exchange", "decode_query_exchange",
        "decode_partials_exchange"}


def load(path):
    doc = json.load(open(path))
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    names = {}  # (pid, tid) -> thread name; pid -> process name
    spans = defaultdict(list)  # (pid, tid) -> [(ts, end, name, args)]
    for e in events:
        if e.get("ph") == "M" and e["name"] == "thread_name":
            names[(e["pid"], e["tid"])] = e["args"]["name"]
        elif e.get("ph") == "M" and e["name"] == "process_name":
            names[e["pid"]] = e["args"]["name"]
        elif e.get("ph") == "X":
            spans[(e["pid"], e["tid"])].append(
                (e["ts"] * 1e-6, (e["ts"] + e["dur"]) * 1e-6, e["name"], e.get("args", {})))
    return names, spans


def nest(spans):
    """The spans of one thread with their depth and self time (their duration less their
    children's): [(start, end, name, args, depth, self_seconds)], parents before children."""
    s = sorted(spans, key=lambda x: (x[0], -x[1]))
    out, stack = [], []  # stack: indexes into out
    for a in s:
        while stack and out[stack[-1]][1] <= a[0] + 1e-9:
            stack.pop()
        if stack:
            p = out[stack[-1]]
            out[stack[-1]] = p[:5] + (p[5] - (a[1] - a[0]),)
        out.append(a + (len(stack), a[1] - a[0]))
        stack.append(len(out) - 1)
    return out


# Spans drawn as outlines (whole phases), not as filled bars.
OUTLINED = {"prefill", "answer", "decode_step", "job"}


def top(spans, name):
    return [x for x in spans if x[2] == name]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace")
    ap.add_argument("png")
    ap.add_argument("--layer", type=int, default=None, help="the prefill layer of panel 2")
    ap.add_argument("--title", default="")
    a = ap.parse_args()
    names, spans = load(a.trace)
    pids = sorted({pid for pid, _ in spans})
    if not pids:
        sys.exit("plot_trace: no spans in " + a.trace)
    # Rows: per rank, the main thread, then any other thread with spans (the kv-cache thread).
    rows = []
    for pid in pids:
        tids = sorted(t for p, t in spans if p == pid)
        main_tid = next((t for t in tids if names.get((pid, t)) == "main"), tids[0])
        rows.append((pid, main_tid, "rank %d" % pid))
        for t in tids:
            if t != main_tid:
                rows.append((pid, t, "  %s" % names.get((pid, t), "thread %d" % t)))
    nested = {(p, t): nest(spans[(p, t)]) for p, t, _ in rows}
    allspans = [x for v in spans.values() for x in v]
    t_end = max(x[1] for x in allspans)
    layered = [x for x in allspans if "layer" in x[3] and x[2] == "qkv_projection"]
    layers = sorted({x[3]["layer"] for x in layered})
    layer = a.layer if a.layer is not None else (layers[len(layers) // 2] if layers else None)
    panels = [("whole run", 0.0, t_end)]
    if layer is not None:
        # The prefill layer: from its first projection to the last rank's end of its MLP.
        ls = [x for x in allspans if x[3].get("layer") == layer and not x[2].startswith("decode")
              and x[2] in ("qkv_projection", "attention", "kv_append", "out_proj_mlp")]
        if ls:
            lo, hi = min(x[0] for x in ls), max(x[1] for x in ls)
            pad = 0.02 * (hi - lo)
            panels.append(("prefill layer %d" % layer, lo - pad, hi + pad))
    dec = [x for x in allspans if x[2] == "decode_step"]
    if dec:
        lo, hi = min(x[0] for x in dec), max(x[1] for x in dec)
        pad = 0.02 * (hi - lo)
        panels.append(("decode (%d steps per rank)" % (len(dec) // len(pids)), lo - pad, hi + pad))

    fig, axes = plt.subplots(len(panels), 1, figsize=(14, 2.2 + 0.45 * len(rows) * len(panels)))
    if len(panels) == 1:
        axes = [axes]
    used = set()
    for ax, (title, lo, hi) in zip(axes, panels):
        for i, (p, t, label) in enumerate(rows):
            y = len(rows) - 1 - i
            by_key = defaultdict(list)  # (depth, name) -> bars
            for s, e, n, _, depth, _ in nested[(p, t)]:
                if e < lo or s > hi or n in OUTLINED:
                    continue
                by_key[(depth, n)].append((s, max(e - s, 1e-7)))
            for (_, n), bars in sorted(by_key.items()):
                used.add(n)
                ax.broken_barh(bars, (y - 0.38, 0.76), facecolors=COLORS.get(n, "#bdbdbd"),
                               linewidth=0)
            # Top-level phases of the main thread as outlines, labelled.
            for ph in ("prefill", "answer"):
                for s, e, _, _ in top(spans[(p, t)], ph):
                    if e < lo or s > hi:
                        continue
                    ax.broken_barh([(s, e - s)], (y - 0.45, 0.9), facecolors="none",
                                   edgecolors="black", linewidth=0.6)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([r[2] for r in reversed(rows)], fontsize=8)
        ax.set_xlim(lo, hi)
        ax.set_xlabel("seconds since the start barrier")
        ax.set_title(title, fontsize=10, loc="left")
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS.get(n, "#bdbdbd"))
               for n in sorted(used)]
    top_frac = 0.9 if a.title else 0.93
    fig.legend(handles, sorted(used), loc="upper center", ncol=7, fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, top_frac + 0.065 if a.title else 1.0))
    if a.title:
        fig.suptitle(a.title, y=0.995, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, top_frac))
    fig.savefig(a.png, dpi=130)

    # The seconds per innermost span and rank, and the waits.
    print("self seconds of each span (less its children; all threads of the rank):")
    totals = defaultdict(lambda: defaultdict(float))
    for (p, t), ls in nested.items():
        for _, _, n, _, _, self_s in ls:
            totals[p][n] += self_s
    allnames = sorted({n for v in totals.values() for n in v})
    print("%-26s" % "span" + "".join("%12s" % ("rank %d" % p) for p in pids))
    for n in allnames:
        print("%-26s" % n + "".join("%12.3f" % totals[p].get(n, 0.0) for p in pids))
    for p in pids:
        main_spans = spans[(p, rows[[r[0] for r in rows].index(p)][1])]
        pre = sum(e - s for s, e, n, _ in main_spans if n == "prefill")
        wait = sum(totals[p].get(n, 0.0) for n in WAIT if not n.startswith("decode"))
        print("rank %d: prefill %.3f s, of which waiting on exchanges %.3f s (%.1f%%)"
              % (p, pre, wait, 100.0 * wait / pre if pre else 0.0))


if __name__ == "__main__":
    main()
