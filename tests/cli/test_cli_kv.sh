#!/usr/bin/env bash
# The tiered KV cache through `longctx run` (DESIGN.md §3), on 1 and 3 ranks under mpirun:
#   - spilling with the f32 codec is bitwise invisible: hidden states and generated tokens equal
#     the run that keeps every block resident, while report.json shows blocks demoted, read back
#     and prefetched, and no rank's device tier above its budget;
#   - the int8 codec stays within 1e-2 (relative, max-abs) of it on the appended tokens;
#   - bad --kv-* flags and budgets too small to hold the persistent set are one-line errors.
# Usage: test_cli_kv.sh path/to/longctx
set -uo pipefail
BIN="$1"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
PY=/usr/bin/python3
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"
MPI=(mpirun --oversubscribe --allow-run-as-root --mca btl self,vader,tcp --mca btl_tcp_if_include lo
     --mca oob_tcp_if_include lo --mca pml ob1)

"$HERE/../../launch/make_document.sh" 30000 "$T/doc.txt"
# 32 globals: most blocks are outside the persistent set, so a small device budget spills.
R=(run --progress off --threads 1 --input "$T/doc.txt" --global-max 32 --query "Who pays? "
   --generate 6 --dump-hidden --kv-block-tokens 64)
run() {  # run NP OUT ARGS...
  local np="$1" out="$2"; shift 2
  timeout 300 "${MPI[@]}" -np "$np" "$BIN" "${R[@]}" --out "$out" "$@" >"$out.log" 2>&1
}

for np in 1 3; do
  run "$np" "$T/base$np" && ok "np $np: resident run" || bad "np $np: resident run: $(tail -3 "$T/base$np.log")"
  run "$np" "$T/f32_$np" --kv-device-budget 1M --kv-codec f32 \
    && ok "np $np: spilled f32 run" || bad "np $np: spilled f32 run: $(tail -3 "$T/f32_$np.log")"
  cmp -s "$T/base$np/hidden.npy" "$T/f32_$np/hidden.npy" \
    && cmp -s "$T/base$np/generated.txt" "$T/f32_$np/generated.txt" \
    && ok "np $np: spilled f32 is bitwise equal to resident" || bad "np $np: spilled f32 differs"
  "$PY" - "$T/f32_$np/report.json" $((1 << 20)) <<'PYEOF' && ok "np $np: report shows spilling within budget" || bad "np $np: report"
import json, sys
r = json.load(open(sys.argv[1])); budget = int(sys.argv[2])
kv = r["kv"]
assert kv["budgets"]["device"] == budget, kv["budgets"]
assert kv["demotions"] > 0 and kv["loads"] > 0, kv
assert kv["host"]["peak_bytes"] > 0, kv
assert kv["prefetch_hits"] + kv["prefetch_misses"] > 0, kv
for p in r["per_rank"]:
    assert p["kv"]["device"]["peak_bytes"] <= budget, p["kv"]
PYEOF
  run "$np" "$T/int8_$np" --kv-device-budget 1M --kv-codec int8 \
    && ok "np $np: spilled int8 run" || bad "np $np: spilled int8 run: $(tail -3 "$T/int8_$np.log")"
  "$PY" - "$T/base$np" "$T/int8_$np" <<'PYEOF' && ok "np $np: int8 within 1e-2 of f32" || bad "np $np: int8 error"
import json, sys, numpy as np
a = np.load(sys.argv[1] + "/hidden.npy"); b = np.load(sys.argv[2] + "/hidden.npy")
n = json.load(open(sys.argv[1] + "/report.json"))["tokens"] - 16  # the appended tokens
assert a.shape == b.shape
err = np.abs(a[n:] - b[n:]).max() / np.abs(a[n:]).max()
print("int8 relative error", err)
assert np.array_equal(a[:n], b[:n])  # the prefill never reads the cache
assert err <= 1e-2, err
PYEOF
done

# Bad flags and impossible budgets: one line, non-zero exit.
B=(run --progress off --threads 1 --input "$T/doc.txt" --query "Q?" --out "$T/x")
expect_error "unknown codec" "${B[@]}" --kv-codec fp7
expect_error "malformed budget" "${B[@]}" --kv-device-budget 12Q
expect_error "zero block tokens" "${B[@]}" --kv-block-tokens 0
expect_error "device budget below the persistent set" "${B[@]}" --kv-device-budget 4K
grep -q -- '--kv-device-budget' "$T/stderr" && ok "the error names --kv-device-budget" \
  || bad "the error does not name the flag: $(cat "$T/stderr")"
expect_error "no room left in any tier" "${B[@]}" --kv-device-budget 1M --kv-host-budget 64K \
  --kv-remote-budget 0

# A budget that one rank cannot meet and the other can (the first half of the document holds
# every sentence end, so rank 0's persistent set is large and rank 1's small): every rank must
# stop at the same layer with rank 0's error, not hang or crash in the next layer's exchange.
"$HERE/../../launch/make_document.sh" 8000 "$T/lopsided.txt"
printf 'word %.0s' $(seq 1600) >>"$T/lopsided.txt"
timeout 120 "${MPI[@]}" -np 2 "$BIN" run --progress off --threads 1 --input "$T/lopsided.txt" \
  --query "Q?" --generate 1 --kv-device-budget 1M --out "$T/lop" >"$T/lop.log" 2>&1
rc=$?
if [[ $rc -ne 0 && $rc -ne 124 ]] && grep -q "rank 0: KV cache, layer 0" "$T/lop.log" \
    && ! grep -qiE "segmentation|MPI_ERR|signal" "$T/lop.log"; then
  ok "a budget only rank 0 misses: every rank stops with rank 0's error (rc=$rc)"
else
  bad "lopsided budget: rc=$rc: $(grep -v '^-' "$T/lop.log" | head -3)"
fi

finish
