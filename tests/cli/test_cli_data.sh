#!/usr/bin/env bash
# `longctx data` end to end: every task writes doc-<i>.txt / .ids.npy / .mask.npy and index.jsonl
# that agree with each other (checked with numpy and json), the same seed gives the same bytes,
# a written context goes through `longctx run --query`, and every bad flag is one error line and
# a non-zero exit that leaves --out untouched. Usage: test_cli_data.sh path/to/longctx
set -uo pipefail
BIN="$1"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
PY=/usr/bin/python3
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# A small prose filler (--filler), so the test does not need the Debian package: 80 paragraphs.
for p in $(seq 1 80); do
  printf 'Paragraph %d begins with an ordinary sentence about the weather in the valley.\n' "$p"
  printf 'The second sentence, which is longer, tells how the farmers of year %d moved\n' "$((1900 + p))"
  printf 'their animals to higher ground before the river rose. Nobody complained.\n\n'
done >"$T/prose.txt"
F=(--filler "$T/prose.txt")

"$BIN" data --help | grep -q -- "--split" && ok "data --help" || bad "data --help"

# Every task: files present, lengths exact, mask on the answer, index consistent.
for task in passkey niah multikey vt lm; do
  if "$BIN" data --task "$task" --tokens 2K --count 3 --seed 7 --out "$T/$task" "${F[@]}" \
      >"$T/out.txt" 2>&1; then
    ok "$task: wrote $(cat "$T/out.txt")"
  else
    bad "$task: $(cat "$T/out.txt")"
    continue
  fi
  if "$PY" - "$T/$task" "$task" <<'PYEOF'
import json, sys
import numpy as np
d, task = sys.argv[1], sys.argv[2]
lines = open(f"{d}/index.jsonl").read().splitlines()
assert len(lines) == 3, lines
for i, line in enumerate(lines):
    j = json.loads(line)
    assert list(j) == ["id", "task", "tokens", "question", "answer", "depths", "seed"], list(j)
    assert j["id"] == i and j["task"] == task and j["tokens"] == 2048, j
    ids = np.load(f"{d}/doc-{i}.ids.npy")
    mask = np.load(f"{d}/doc-{i}.mask.npy")
    ctx = open(f"{d}/doc-{i}.txt", "rb").read()
    assert ids.dtype == np.int32 and ids.shape == (2048,), (ids.dtype, ids.shape)
    assert mask.dtype == np.uint8 and mask.shape == (2048,), (mask.dtype, mask.shape)
    text = bytes(ids.astype(np.uint8))
    q, a = j["question"].encode(), j["answer"].encode()
    assert text == ctx + q + a, "ids != context + question + answer"
    if task == "lm":
        assert q == b"" and a == b"" and mask[0] == 0 and mask[1:].all()
    else:
        assert mask.sum() == len(a) and mask[-len(a):].all(), "mask is not the answer"
        assert len(j["depths"]) >= 1 and all(0 <= x <= 1 for x in j["depths"])
    if task == "passkey":
        key = a.decode().strip(" .")
        assert f"The pass key is {key}. Remember it.".encode() in ctx
PYEOF
  then ok "$task: files agree"; else bad "$task: files disagree"; fi
  [[ -z "$(find "$T/$task" -name '*.tmp.*')" ]] && ok "$task: no temporary file left" \
    || bad "$task: temporary files left"
done

# Deterministic: the same flags give the same bytes; another seed other bytes; --depth places.
"$BIN" data --task niah --tokens 2K --count 3 --seed 7 --out "$T/again" "${F[@]}" >/dev/null
cmp -s "$T/niah/index.jsonl" "$T/again/index.jsonl" && cmp -s "$T/niah/doc-2.ids.npy" "$T/again/doc-2.ids.npy" \
  && ok "same seed, same bytes" || bad "same seed, different bytes"
"$BIN" data --task niah --tokens 2K --count 1 --seed 8 --out "$T/other" "${F[@]}" >/dev/null
cmp -s "$T/niah/doc-0.ids.npy" "$T/other/doc-0.ids.npy" && bad "seed 8 equals seed 7" || ok "other seed, other bytes"
"$BIN" data --task passkey --tokens 16K --depth 0.25 --split eval --out "$T/depth" "${F[@]}" >/dev/null \
  && "$PY" -c "import json; d = json.loads(open('$T/depth/index.jsonl').readline())['depths'][0]; assert abs(d - 0.25) <= 0.01, d" \
  && ok "--depth 0.25 --split eval" || bad "--depth 0.25"

# The default filler (the debian-handbook package), when installed.
if [[ -d /usr/share/doc/debian-handbook/html/en-US ]]; then
  "$BIN" data --task vt --tokens 64K --out "$T/default" >/dev/null && [[ -s "$T/default/doc-0.txt" ]] \
    && ok "default filler" || bad "default filler"
else
  echo "skip: default filler (debian-handbook not installed)"
fi

# A written document through `longctx run`: the context as --input, the question as --query.
Q="$("$PY" -c "import json; print(json.loads(open('$T/passkey/index.jsonl').readline())['question'], end='')")"
"$BIN" run --progress off --threads 1 --input "$T/passkey/doc-0.txt" --query "$Q" --generate 2 \
    --out "$T/run" >"$T/run.txt" 2>&1 && [[ -f "$T/run/generated.txt" ]] \
  && ok "run --input doc-0.txt --query" || bad "run: $(tail -3 "$T/run.txt")"

# Bad flags and values: one line, non-zero exit, nothing written.
mkdir -p "$T/keep"
expect_error "unknown task" data --task needle --tokens 2K --out "$T/keep" "${F[@]}"
expect_error "missing --task" data --tokens 2K --out "$T/keep" "${F[@]}"
expect_error "missing --out" data --task lm --tokens 2K "${F[@]}"
expect_error "bad --tokens" data --task lm --tokens 2Q --out "$T/keep" "${F[@]}"
expect_error "zero --tokens" data --task lm --tokens 0 --out "$T/keep" "${F[@]}"
expect_error "too few tokens" data --task multikey --tokens 300 --out "$T/keep" "${F[@]}"
expect_error "depth above 1" data --task passkey --tokens 2K --depth 1.5 --out "$T/keep" "${F[@]}"
expect_error "bad split" data --task lm --tokens 2K --split test --out "$T/keep" "${F[@]}"
expect_error "negative count" data --task lm --tokens 2K --count -1 --out "$T/keep" "${F[@]}"
expect_error "zero keys" data --task multikey --tokens 4K --keys 0 --out "$T/keep" "${F[@]}"
expect_error "zero hops" data --task vt --tokens 4K --hops 0 --out "$T/keep" "${F[@]}"
expect_error "too many keys" data --task multikey --tokens 1M --keys 100000 --out "$T/keep" "${F[@]}"
expect_error "missing filler file" data --task lm --tokens 2K --out "$T/keep" --filler "$T/none.txt"
printf 'One paragraph only.\n' >"$T/tiny.txt"
expect_error "filler too small" data --task lm --tokens 2K --out "$T/keep" --filler "$T/tiny.txt"
expect_error "non-numeric seed" data --task lm --tokens 2K --seed x --out "$T/keep" "${F[@]}"
[[ -z "$(ls -A "$T/keep")" ]] && ok "bad flags wrote nothing" || bad "bad flags wrote $(ls "$T/keep")"
expect_error "bad flag creates no --out" data --task vt --tokens 4K --hops 0 --out "$T/new" "${F[@]}"
[[ ! -e "$T/new" ]] && ok "no --out created on a bad flag" || bad "--out created on a bad flag"

finish
