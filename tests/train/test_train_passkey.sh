#!/usr/bin/env bash
# Trains builtin:tiny from its random weights on short passkey documents (200 tokens, the
# Landmark format over real prose) and checks that it learned the task: the loss falls below
# what guessing the five digits costs (5 ln 10 / 7 tokens = 1.64 nats per answer token), and on
# 20 fresh documents from the held-out prose, answered as `longctx run --query` answers, the
# exact pass key comes back far more often than chance (1e-5). A few minutes on 2 cores.
# Usage: test_train_passkey.sh path/to/longctx
set -uo pipefail
BIN="$1"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
PY=/usr/bin/python3
# shellcheck source=../cli/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cli/lib.sh"

STEPS="${LONGCTX_TRAIN_TEST_STEPS:-4000}"
start=$(date +%s)
"$BIN" train --model builtin:tiny --tasks passkey --curriculum "200:$STEPS" --batch 4 --lr 3e-3 \
  --min-lr 3e-4 --threads 2 --progress off --out "$T/run" >"$T/train.log" 2>&1 \
  && ok "train $STEPS steps ($(( $(date +%s) - start )) s)" || bad "train: $(tail -3 "$T/train.log")"
"$PY" - "$T/run/train.jsonl" <<'PYEOF' && ok "loss fell below the digit-guessing floor" || bad "loss did not fall enough"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first = sum(r["loss"] for r in rows[:50]) / 50
last = sum(r["loss"] for r in rows[-100:]) / 100
print(f"mean loss of the first 50 steps {first:.3f}, of the last 100 {last:.3f}")
assert last < 0.5 * first and last < 1.0, (first, last)
PYEOF
"$BIN" eval --model "$T/run/final" --task passkey --tokens 200 --count 20 --data-seed 12345 \
  --threads 2 --json "$T/eval.json" >"$T/eval.log" 2>&1 && ok "eval ran" || bad "eval: $(tail -3 "$T/eval.log")"
tail -1 "$T/eval.log"
"$PY" - "$T/eval.json" <<'PYEOF' && ok "held-out passkey accuracy far above chance" || bad "accuracy too low"
import json, sys
r = json.load(open(sys.argv[1]))
print(f"accuracy {r['accuracy']:.2f} ({r['correct']}/{r['total']})")
assert r["split"] == "eval" and r["total"] == 20
assert r["accuracy"] >= 0.25, r["accuracy"]
PYEOF
finish
