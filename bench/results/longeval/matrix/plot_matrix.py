#!/usr/bin/python3
"""Plots of `longctx bench matrix` (embedded in the longctx binary and written next to
matrix.json, so a matrix can be re-plotted: python3 plot_matrix.py DIR/matrix.json DIR).

memory_vs_length.png, throughput_vs_length.png and prefill_time_vs_length.png are log-log with
O(n^2) and O(n log n) guide lines; decode_latency_vs_length.png; kv_bytes_per_tier.png.
Needs python3-matplotlib (Debian)."""
import json
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"dense": "tab:red", "window": "tab:gray", "hybrid-union": "tab:blue",
          "hybrid-weighted": "tab:green"}
STYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D"]


def ok_runs(m, task, kv="resident"):
    return [r for r in m["runs"] if r["status"] == "ok" and r["task"] == task and r["kv"] == kv]


def series(runs, key):
    """{(kind, ranks): [(n, value)]} sorted by n."""
    out = {}
    for r in runs:
        v = r[key]
        if v is None or v <= 0:
            continue
        out.setdefault((r["kind"], r["ranks"]), []).append((r["tokens"], v))
    return {k: sorted(v) for k, v in out.items()}


def label_tokens(n):
    if n % (1 << 20) == 0:
        return "%dM" % (n >> 20)
    if n % 1024 == 0:
        return "%dK" % (n >> 10)
    return str(n)


def draw(ax, data, ranks_order, scale=1.0):
    for (kind, ranks), pts in sorted(data.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        i = ranks_order.index(ranks) % len(STYLES)
        ax.plot([p[0] for p in pts], [p[1] * scale for p in pts], STYLES[i], marker=MARKERS[i],
                color=COLORS.get(kind, "black"), label="%s, %d rank%s" % (kind, ranks,
                                                                       "" if ranks == 1 else "s"))


def guides(ax, data, fn_n2, fn_nlogn, scale=1.0):
    """Guide lines through the first point of the lowest series: f(n) for O(n^2), O(n log n)."""
    pts = [p for v in data.values() for p in v]
    if not pts:
        return
    ns = sorted({p[0] for p in pts})
    n0 = ns[0]
    y0 = min(p[1] for p in pts if p[0] == n0) * scale
    xs = [ns[0] * (ns[-1] / ns[0]) ** (i / 40.0) for i in range(41)] if len(ns) > 1 else ns
    ax.plot(xs, [y0 * fn_n2(x) / fn_n2(n0) for x in xs], color="black", lw=0.8, ls=(0, (6, 3)),
            label="O(n^2) cost")
    ax.plot(xs, [y0 * fn_nlogn(x) / fn_nlogn(n0) for x in xs], color="black", lw=0.8,
            ls=(0, (1, 2)), label="O(n log n) cost")


def finish(fig, ax, path, title, ylabel, ticks):
    ax.set_xscale("log")
    ax.set_xlabel("document length (tokens)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if ticks:
        ax.set_xticks(ticks)
        ax.set_xticklabels([label_tokens(t) for t in ticks])
        ax.minorticks_off()
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot_matrix.py MATRIX.json OUT_DIR")
    with open(sys.argv[1]) as f:
        m = json.load(f)
    out = sys.argv[2].rstrip("/") + "/"
    ranks_order = sorted(m["options"]["ranks"])
    ticks = m["options"]["lengths"]
    model = m["options"]["model"]
    und = ok_runs(m, "understand")
    gen = ok_runs(m, "generate")
    n2 = lambda n: n * n
    nlogn = lambda n: n * math.log2(n)

    # Memory vs length (log-log). The guides show how memory would grow if it followed the cost.
    data = series(und, "peak_rss_bytes_max_rank")
    fig, ax = plt.subplots(figsize=(7.5, 5))
    draw(ax, data, ranks_order, 1 / 2**20)
    guides(ax, data, n2, nlogn, 1 / 2**20)
    ax.set_yscale("log")
    finish(fig, ax, out + "memory_vs_length.png",
           "Peak memory per rank, prefill (%s)" % model, "peak RSS of the largest rank (MiB)", ticks)

    # Throughput vs length: tokens/s = n / time, so O(n^2) time falls as 1/n and O(n log n) as
    # 1/log n.
    data = series(und, "tokens_per_second")
    fig, ax = plt.subplots(figsize=(7.5, 5))
    draw(ax, data, ranks_order)
    top = {}
    for v in data.values():
        for n, y in v:
            top[n] = max(top.get(n, 0), y)
    guides(ax, {("max", 0): sorted(top.items())}, lambda n: 1.0 / n, lambda n: 1.0 / math.log2(n))
    ax.set_yscale("log")
    finish(fig, ax, out + "throughput_vs_length.png",
           "Prefill throughput (%s); guides: throughput if the cost grew as O(n^2) or O(n log n)"
           % model, "tokens per second", ticks)

    # Prefill time vs length, the cost itself.
    data = series(und, "prefill_seconds")
    fig, ax = plt.subplots(figsize=(7.5, 5))
    draw(ax, data, ranks_order)
    guides(ax, data, n2, nlogn)
    ax.set_yscale("log")
    finish(fig, ax, out + "prefill_time_vs_length.png", "Prefill time (%s)" % model, "seconds",
           ticks)

    # Decode latency vs length (generate), every kind resident plus the KV variants of hybrid-union.
    fig, ax = plt.subplots(figsize=(7.5, 5))
    data = series(gen, "decode_ms_per_token")
    draw(ax, data, ranks_order)
    for kv, color in (("spilled-f32", "tab:purple"), ("spilled-int8", "tab:orange")):
        d = series(ok_runs(m, "generate", kv), "decode_ms_per_token")
        for (kind, ranks), pts in sorted(d.items()):
            i = ranks_order.index(ranks) % len(STYLES)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], STYLES[i], marker=MARKERS[i],
                    color=color, label="%s %s, %d rank%s" % (kind, kv, ranks,
                                                             "" if ranks == 1 else "s"))
    ax.set_yscale("log")
    finish(fig, ax, out + "decode_latency_vs_length.png",
           "Decode latency: question + %d greedy tokens against the cached document (%s)"
           % (m["options"]["generate"], model), "ms per token", ticks)

    # Bytes per KV tier (generate): for each (length, ranks, KV variant) of hybrid-union, the KV
    # bytes in each tier at the end of the run (all ranks), side by side on a log scale.
    rows = [r for r in m["runs"] if r["status"] == "ok" and r["task"] == "generate"
            and r["kind"] == "hybrid-union"]
    rows.sort(key=lambda r: (r["tokens"], r["ranks"], r["kv"]))
    fig, ax = plt.subplots(figsize=(max(7.5, 0.35 * len(rows) + 2.5), 5))
    labels = ["%s p%d\n%s" % (label_tokens(r["tokens"]), r["ranks"], r["kv"]) for r in rows]
    width = 0.27
    for k, (tier, color) in enumerate((("device", "tab:blue"), ("host", "tab:orange"),
                                       ("remote", "tab:green"))):
        vals = [r["kv_bytes"][tier] / 2**20 for r in rows]
        ax.bar([i + (k - 1) * width for i in range(len(rows))], vals, width=width, color=color,
               label=tier)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=6, rotation=90)
    if any(r["kv_bytes"][t] > 0 for r in rows for t in ("device", "host", "remote")):
        ax.set_yscale("log")
    ax.set_ylabel("KV bytes at the end of the run, all ranks (MiB)")
    ax.set_title("KV cache bytes per tier, hybrid-union, task generate (%s; spilled: device "
                 "budget %s per rank)" % (model, m["options"]["kv_device_budget"]), fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out + "kv_bytes_per_tier.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
