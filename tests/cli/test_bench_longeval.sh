#!/usr/bin/env bash
# `longctx bench longeval` end to end on small models (random weights: the accuracies are
# whatever they are; what is checked is the grid, the files and the variants' globals), the
# window-only switch (longctx.query_globals false: not even the question is global), and bad
# flags (one line, non-zero exit).
# Usage: test_bench_longeval.sh path/to/longctx
set -uo pipefail
BIN="$1"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
PY=/usr/bin/python3
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$BIN" mkmodel --preset tiny --out "$T/m" >/dev/null || bad "mkmodel"
"$BIN" mkmodel --preset tiny --out "$T/w" >/dev/null || bad "mkmodel window"
"$PY" - "$T/w/config.json" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["longctx"].update(global_max=0, sinks=0, query_globals=False)
json.dump(c, open(sys.argv[1], "w"), indent=1)
PYEOF

# The window-only model: no global at all, the question's tokens included.
"$BIN" data --task passkey --tokens 600 --out "$T/d" --split eval >/dev/null || bad "data"
"$BIN" run --model "$T/w" --input "$T/d/doc-0.txt" --query "What is the pass key?" --generate 3 \
  --threads 1 --out "$T/rw" >"$T/rw.log" 2>&1 || bad "run window-only: $(tail -1 "$T/rw.log")"
"$BIN" run --model "$T/m" --input "$T/d/doc-0.txt" --query "What is the pass key?" --generate 3 \
  --threads 1 --out "$T/rm" >"$T/rm.log" 2>&1 || bad "run hybrid: $(tail -1 "$T/rm.log")"
"$PY" - "$T" <<'PYEOF' && ok "window-only: no globals; hybrid: the 21 question tokens are global" \
  || bad "globals of the window-only and hybrid runs"
import numpy as np, os, sys
t = sys.argv[1]
n = os.path.getsize(f"{t}/d/doc-0.txt")  # the question follows the context
gw = np.load(f"{t}/rw/globals.npy")
gm = np.load(f"{t}/rm/globals.npy")
assert gw.size == 0, gw
assert set(range(n, n + 21)) <= set(gm.tolist()), (n, gm)
PYEOF

# The grid: 2 lengths x 2 depths x 2 docs for hybrid, cut and window; dense only at 200 tokens.
"$BIN" bench longeval --model "$T/m" --window-model "$T/w" --tasks passkey --lengths 200,400 \
  --depths 0,1 --count 2 --dense-max 200 --threads 1 --out "$T/le" >"$T/le.log" 2>&1 \
  && ok "bench longeval ran" || bad "bench longeval: $(tail -3 "$T/le.log")"
"$PY" - "$T/le" <<'PYEOF' && ok "longeval.json: the grid, the variants, documents per cell" \
  || bad "longeval.json"
import json, os, sys
d = sys.argv[1]
j = json.load(open(f"{d}/longeval.json"))
cells = j["cells"]
count = {}
for c in cells:
    count[c["variant"]] = count.get(c["variant"], 0) + 1
    assert c["total"] == 2 and 0 <= c["correct"] <= 2, c
    assert len(c["generated"]) == 2 and len(c["answers"]) == 2, c
assert count == {"hybrid": 4, "cut": 4, "window": 4, "dense": 2}, count
assert {c["tokens"] for c in cells if c["variant"] == "dense"} == {200}
# The same documents for every variant: the answers of a cell agree across variants.
key = lambda c: (c["task"], c["tokens"], c["depth"])
by = {}
for c in cells:
    by.setdefault(key(c), set()).add(tuple(c["answers"]))
assert all(len(v) == 1 for v in by.values()), by
md = open(f"{d}/longeval.md").read()
assert "| hybrid | 200 |" in md and "| window | 400 |" in md, md
assert os.path.getsize(f"{d}/heatmap-passkey.png") > 1000
PYEOF
# Without a window-only model its variant is skipped, and said so.
"$BIN" bench longeval --model "$T/m" --variants hybrid,window --tasks passkey --lengths 200 \
  --depths 0.5 --count 1 --threads 1 --no-plots --out "$T/le2" >"$T/le2.log" 2>&1 \
  && grep -q "window at 200 tokens: skipped" "$T/le2.log" && ok "window variant skipped without a model" \
  || bad "skip: $(tail -2 "$T/le2.log")"

# The matrix's task axis from these accuracies: pooled over depths, per kind and length.
"$BIN" bench matrix --model "$T/m" --lengths 200 --ranks 1 --kinds dense,window,hybrid-union \
  --tasks generate --kv resident --generate 4 --no-plots --out "$T/mx" \
  --longeval "$T/le/longeval.json" >"$T/mx.log" 2>&1 && ok "bench matrix --longeval ran" \
  || bad "bench matrix --longeval: $(tail -3 "$T/mx.log")"
"$PY" - "$T/le/longeval.json" "$T/mx/matrix.json" "$T/mx/matrix.md" <<'PYEOF' \
  && ok "matrix accuracy axis = longeval pooled over depths" || bad "matrix accuracy axis"
import json, sys
le = json.load(open(sys.argv[1]))
mx = json.load(open(sys.argv[2]))
want = {}
kind = {"hybrid": "hybrid-union", "cut": "window", "dense": "dense"}
for c in le["cells"]:
    if c["variant"] in kind:
        k = (kind[c["variant"]], c["task"], c["tokens"])
        a, b = want.get(k, (0, 0))
        want[k] = (a + c["correct"], b + c["total"])
got = {(r["kind"], r["task"], r["tokens"]): (r["correct"], r["total"]) for r in mx["accuracy"]["rows"]}
assert got == want, (got, want)
assert "## Task accuracy" in open(sys.argv[3]).read()
PYEOF
echo '{"cells": 3}' >"$T/notlongeval.json"
expect_error "matrix --longeval not a longeval.json" bench matrix --lengths 200 --ranks 1 \
  --out "$T/mx2" --longeval "$T/notlongeval.json"

expect_error "unknown variant" bench longeval --model "$T/m" --variants hybrid,sparse --out "$T/x"
expect_error "counts vs lengths" bench longeval --model "$T/m" --lengths 2K,4K --count 1,2,3 --out "$T/x"
expect_error "depth out of range" bench longeval --model "$T/m" --depths 0.5,1.5 --out "$T/x"
expect_error "length below the task" bench longeval --model "$T/m" --tasks multikey --lengths 300 --out "$T/x"
expect_error "lm has no answer" bench longeval --model "$T/m" --tasks lm --out "$T/x"
expect_error "bad --query-globals" run --model "$T/m" --input "$T/d/doc-0.txt" --query-globals maybe --out "$T/x"

finish
