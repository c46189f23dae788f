#!/bin/bash
# `longctx bench train` end to end, quickly: one 1024-token step of builtin:tiny against the torch
# peer; the output must carry the table and the loss-equality line (longctx's loss equal to the
# torch float32 peer's within 1e-4 relative). Skipped (77) when /usr/bin/python3 has no torch.
BIN="$1"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
source "$(dirname "$0")/lib.sh"

if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  echo "SKIP: /usr/bin/python3 has no torch (the peer of bench train)"
  exit 77
fi

timeout 120 "$BIN" bench train --model builtin:tiny --tokens 1024 --repeats 1 --threads 1 \
  --peer auto --json "$T/train.json" >"$T/out" 2>"$T/err"
rc=$?
cat "$T/out" "$T/err"
[[ $rc -eq 0 ]] && ok "exit 0" || bad "exit $rc"
grep -q '^# BLAS: .*; kernel ' "$T/out" && ok "BLAS kernel printed" || bad "no BLAS kernel line"
grep -Eq '^ +n +P +globals +longctx/s +torch-dns/s +torch-chk/s' "$T/out" && ok "table header" \
  || bad "no table header"
grep -Eq '^ +1024 +1 +[0-9]+ +[0-9]+ +[0-9]+ +[0-9]+ ' "$T/out" && ok "table row n=1024" \
  || bad "no table row for n=1024 with both peers"
grep -Eq '^loss n=1024: longctx [0-9.]+, torch-dense [0-9.]+ \(rel [0-9.e+-]+\), torch-chunks [0-9.]+ \(rel [0-9.e+-]+\): loss equal within 1e-04 relative' "$T/out" \
  && ok "loss-equality line" || bad "no loss-equality line"
/usr/bin/python3 -c "
import json, sys
j = json.load(open('$T/train.json'))
r = j['rows'][0]
assert r['n'] == 1024 and r['tokens_per_s'] > 0, r
for p in ('torch_dense', 'torch_chunks'):
    assert abs(r[p]['loss'] - r['loss']) <= 1e-4 * abs(r['loss']), (p, r[p], r['loss'])
" && ok "json rows" || bad "json rows"

expect_error "bad --peer" bench train --tokens 1024 --peer maybe
expect_error "bad --repeats" bench train --tokens 1024 --repeats 0

finish
