#!/usr/bin/env python3
"""Heat maps of `longctx bench longeval`: accuracy by document length x needle depth.

Usage: plot_longeval.py longeval.json OUT_DIR
Writes OUT_DIR/heatmap-<task>.png: one panel per variant (rows: lengths, columns: depths),
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
    data = json.load(open(sys.argv[1]))
    out = sys.argv[2]
    lengths, depths = data["lengths"], data["depths"]
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
        fig.suptitle(f"{task}: accuracy ({data['ranks']} ranks)")
        fig.tight_layout()
        fig.savefig(f"{out}/heatmap-{task}.png", dpi=100)
        plt.close(fig)


if __name__ == "__main__":
    main()
