#!/usr/bin/env python3
"""Heat maps of `longctx bench longeval`: accuracy by document length x needle depth.

Usage: plot_longeval.py OUT_DIR longeval.json [more.json ...]
Several JSON files (runs of the same model with other variants, lengths or counts) are merged:
their cells are pooled (a cell present in two files adds its documents). Writes OUT_DIR/heatmap-<task>.png: one panel per variant (rows: lengths, columns: depths),
each cell the share of documents answered right, annotated "right/total"; '-' where the
variant did not run (dense beyond its limit, window without a window-only model).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def tokens_label(n):
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20}M"
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return f"{n >> 10}K"
    return str(n)


def main():
    out = sys.argv[1]
    runs = [json.load(open(p)) for p in sys.argv[2:]]
    data = dict(runs[0])
    lengths = sorted({n for r in runs for n in r["lengths"]})
    depths = sorted({d for r in runs for d in r["depths"]})
    tasks = list(dict.fromkeys(t for r in runs for t in r["tasks"]))
    variants = list(dict.fromkeys(v for r in runs for v in r["variants"]))
    pooled = {}
    for r in runs:
        for c in r["cells"]:
            k = (c["variant"], c["task"], c["tokens"], c["depth"])
            p = pooled.setdefault(k, dict(c, correct=0, total=0))
            p["correct"] += c["correct"]
            p["total"] += c["total"]
    for p in pooled.values():
        p["accuracy"] = p["correct"] / p["total"] if p["total"] else 0.0
    data.update(lengths=lengths, depths=depths, tasks=tasks, variants=variants,
                cells=list(pooled.values()))
    for task in data["tasks"]:
        variants = [v for v in data["variants"]
                    if any(c["variant"] == v and c["task"] == task for c in data["cells"])]
        if not variants:
            continue
        fig, axes = plt.subplots(1, len(variants), figsize=(3.2 * len(variants) + 1, 3.4),
                                 squeeze=False)
        for ax, v in zip(axes[0], variants):
            acc = np.full((len(lengths), len(depths)), np.nan)
            text = [["-"] * len(depths) for _ in lengths]
            for c in data["cells"]:
                if c["variant"] != v or c["task"] != task:
                    continue
                i, k = lengths.index(c["tokens"]), depths.index(c["depth"])
                acc[i, k] = c["accuracy"]
                text[i][k] = f'{c["correct"]}/{c["total"]}'
            ax.imshow(np.ma.masked_invalid(acc), vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
            for i in range(len(lengths)):
                for k in range(len(depths)):
                    ax.text(k, i, text[i][k], ha="center", va="center", fontsize=8)
            ax.set_xticks(range(len(depths)), [f"{100 * d:.0f}%" for d in depths])
            ax.set_yticks(range(len(lengths)), [tokens_label(n) for n in lengths])
            ax.set_xlabel("needle depth")
            ax.set_title(v)
        axes[0][0].set_ylabel("document tokens")
        ranks = sorted({r["ranks"] for r in runs})
        fig.suptitle(f"{task}: documents answered right (ranks: {', '.join(map(str, ranks))})")
        fig.tight_layout()
        fig.savefig(f"{out}/heatmap-{task}.png", dpi=100)
        plt.close(fig)


if __name__ == "__main__":
    main()
