#!/usr/bin/env bash
# What the seed's cache-l1 auxiliary loss (mean |K| + mean |V| of the cached vectors) does:
# builtin:tiny trained twice on the same prose (lm task, the same steps and lr), once with
# --loss ce and once with --loss ce,cache-l1:C, then for each model
#   - held-out cross-entropy (8 documents of 1024 tokens, `longctx grad --loss ce`) and perplexity,
#   - the cache's mean |K| + |V| (`longctx grad --loss cache-l1`),
#   - the int8 KV error: a 32K-token held-out document, 16 tokens decoded with the cache spilled
#     to int8 (an 8 MiB device tier: the blocks holding global tokens stay, about half the rest
#     leave) against the resident f32 cache, max-abs relative error of their hidden states.
# Usage: bench/cache_l1.sh path/to/longctx OUT [STEPS=300] [C=0.5]
set -euo pipefail
BIN="$1"; OUT="$2"; STEPS="${3:-300}"; C="${4:-0.5}"
THREADS="${THREADS:-2}"
mkdir -p "$OUT"
W="$(mktemp -d)"
trap 'rm -rf "$W"' EXIT
"$BIN" data --task lm --tokens 1024 --count 8 --seed 77 --split eval --out "$W/eval" >/dev/null
"$BIN" data --task lm --tokens 32K --count 1 --seed 78 --split eval --out "$W/long" >/dev/null
COMMON=(train --model builtin:tiny --tasks lm --batch 4 --lr 3e-3 --min-lr 3e-4 --threads "$THREADS" --progress off --curriculum "1K:$STEPS")
"$BIN" "${COMMON[@]}" --loss ce --out "$W/ce" >"$W/ce.log" 2>&1
"$BIN" "${COMMON[@]}" --loss "ce,cache-l1:$C" --out "$W/l1" >"$W/l1.log" 2>&1
for m in ce l1; do
  for i in $(seq 0 7); do
    "$BIN" grad --model "$W/$m/final" --input-ids "$W/eval/doc-$i.ids.npy" --loss ce,cache-l1:1 \
      --threads "$THREADS" --out "$W/$m/eval-$i" >/dev/null
  done
  R=(run --model "$W/$m/final" --input "$W/long/doc-0.txt" --query "What happens next? It is" \
     --generate 16 --dump-hidden --progress off --threads "$THREADS")
  "$BIN" "${R[@]}" --out "$W/$m/resident" >/dev/null
  "$BIN" "${R[@]}" --kv-device-budget 8M --kv-codec int8 --out "$W/$m/int8" >/dev/null
done
/usr/bin/python3 - "$W" "$OUT" "$C" "$STEPS" <<'PYEOF'
import json, math, sys
import numpy as np
w, out, c, steps = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
rows = []
for m, label in [("ce", "ce"), ("l1", f"ce + cache-l1:{c}")]:
    reps = [json.load(open(f"{w}/{m}/eval-{i}/report.json")) for i in range(8)]
    ce = sum(r["loss_terms"]["ce"] for r in reps) / 8
    l1 = sum(r["loss_terms"]["cache_l1"] for r in reps) / 8
    a = np.load(f"{w}/{m}/resident/hidden.npy"); b = np.load(f"{w}/{m}/int8/hidden.npy")
    n = json.load(open(f"{w}/{m}/resident/report.json"))["tokens"] - 16
    err = float(np.abs(a[n:] - b[n:]).max() / np.abs(a[n:]).max())
    same = open(f"{w}/{m}/resident/generated.txt", "rb").read() == open(f"{w}/{m}/int8/generated.txt", "rb").read()
    kv = json.load(open(f"{w}/{m}/int8/report.json"))["kv"]
    assert kv["demotions"] > 0, "the int8 run did not spill"
    rows.append((label, ce, math.exp(ce), l1, err, same))
with open(f"{out}/cache_l1.md", "w") as f:
    f.write(f"builtin:tiny, lm on the Debian handbook prose, 1K tokens x batch 4 x {steps} steps each; "
            "held-out: 8 eval-split documents of 1024 tokens.\n\n")
    f.write("| loss | held-out CE | perplexity | mean abs K + mean abs V | int8 KV decode error (max-abs rel) | same 16 tokens as f32 |\n|---|---|---|---|---|---|\n")
    for label, ce, ppl, l1, err, same in rows:
        f.write(f"| {label} | {ce:.4f} | {ppl:.2f} | {l1:.4f} | {err:.2e} | {'yes' if same else 'no'} |\n")
print(open(f"{out}/cache_l1.md").read())
PYEOF
