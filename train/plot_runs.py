#!/usr/bin/env python3
"""Loss curves of one model trained in several `longctx train` runs (phases), end to end.

Usage: plot_runs.py OUT.png RUN_DIR [RUN_DIR ...]
Each RUN_DIR holds the train.jsonl of one phase (the next phase started from the previous
one's final/). Plots, against tokens seen in all phases, the loss and each task's loss
(moving average of 50 steps), with the phase and stage boundaries and each stage's sequence
length, and the learning rate below.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def smooth(xs, ys, k=50):
    out_x, out_y, acc = [], [], []
    for x, y in zip(xs, ys):
        acc.append(y)
        if len(acc) > k:
            acc.pop(0)
        out_x.append(x)
        out_y.append(sum(acc) / len(acc))
    return out_x, out_y


def main():
    out, runs = sys.argv[1], sys.argv[2:]
    fig, (ax, axlr) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1]})
    offset = 0.0
    series = {}
    lr_x, lr_y = [], []
    marks = []
    for p, run in enumerate(runs):
        rows = [json.loads(l) for l in open(f"{run}/train.jsonl") if l.strip()]
        prev_stage = None
        for r in rows:
            x = (offset + r["tokens_seen"]) / 1e6
            if r["stage"] != prev_stage:
                marks.append((x, f"P{p + 1} {r['seq_len']}"))
                prev_stage = r["stage"]
            series.setdefault("loss (all tasks)", ([], []))
            series["loss (all tasks)"][0].append(x)
            series["loss (all tasks)"][1].append(r["loss"])
            for task, v in r.get("task_loss", {}).items():
                series.setdefault(task, ([], []))
                series[task][0].append(x)
                series[task][1].append(v)
            lr_x.append(x)
            lr_y.append(r["lr"])
        offset += rows[-1]["tokens_seen"] if rows else 0
    for name, (xs, ys) in series.items():
        sx, sy = smooth(xs, ys)
        ax.plot(sx, sy, lw=1.6 if name.startswith("loss") else 0.9, label=name)
    ax.axhline(5 * 2.302585 / 7, color="gray", ls="--", lw=0.7,
               label="passkey: guessing the 5 digits")
    for x, label in marks:
        for a in (ax, axlr):
            a.axvline(x, color="k", ls=":", lw=0.6)
        ax.text(x, 0.02, label, rotation=90, va="bottom", fontsize=7,
                transform=ax.get_xaxis_transform())
    ax.set_yscale("log")
    ax.set_ylabel("CE on answer tokens (nats, mean of 50 steps)")
    ax.legend(fontsize=8, loc="upper right")
    axlr.plot(lr_x, lr_y, color="gray")
    axlr.set_ylabel("lr")
    axlr.set_xlabel("training tokens (millions, all phases)")
    fig.subplots_adjust(left=0.08, right=0.98, top=0.97, bottom=0.08, hspace=0.08)
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    main()
