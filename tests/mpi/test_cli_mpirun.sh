#!/usr/bin/env bash
# `mpirun -np P longctx attention` end to end: for P = 1..4 the one output file equals the
# single-process output within 1e-5; a fixed P is bitwise repeatable; --stats reports traffic;
# bad input is one error line and a non-zero exit; a rank killed mid-run ends the job within
# seconds, non-zero, naming the rank. mpirun exiting 0 without running can never pass: every
# check reads the output files, which are removed before each run.
# Usage: test_cli_mpirun.sh path/to/longctx
set -uo pipefail
BIN="$1"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
MPIRUN=(timeout 300 mpirun --oversubscribe --allow-run-as-root --mca btl self,vader,tcp
        --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo --mca pml ob1)
PY=/usr/bin/python3
# shellcheck source=../cli/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cli/lib.sh"

# compare A.npy B.npy TOL -> prints the max per-row relative error; fails above TOL
compare() {
  "$PY" - "$1" "$2" "$3" <<'PYEOF'
import sys, numpy as np
a, b, tol = np.load(sys.argv[1]), np.load(sys.argv[2]), float(sys.argv[3])
assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
a2, b2 = a.reshape(a.shape[0], -1).astype(np.float64), b.reshape(b.shape[0], -1).astype(np.float64)
if a.ndim == 3:
    a2, b2 = a.reshape(-1, a.shape[2]).astype(np.float64), b.reshape(-1, b.shape[2]).astype(np.float64)
    err = (np.abs(a2 - b2).max(axis=1) / np.maximum(np.abs(b2).max(axis=1), 1e-30)).max()
else:
    err = (np.abs(a2 - b2) / np.maximum(1.0, np.abs(b2))).max()
print(f"max relative error {err:.3g}")
sys.exit(0 if err <= tol else 1)
PYEOF
}

"$BIN" attention --make-sample "$T/s" --n 3000 --heads 4 --kv-heads 2 --head-dim 32 --seed 3 >/dev/null
A=(attention --q "$T/s/q.npy" --k "$T/s/k.npy" --v "$T/s/v.npy" --globals "$T/s/globals.npy")
for variant in "--window 64" "--window 700 --bidirectional --fusion weighted:0.7"; do
  # shellcheck disable=SC2086
  "$BIN" "${A[@]}" $variant --threads 1 --out "$T/o1.npy" --lse "$T/l1.npy" >/dev/null \
    || bad "single-process run [$variant]"
  for P in 1 2 3 4; do
    rm -f "$T/oP.npy" "$T/lP.npy"
    # shellcheck disable=SC2086
    if "${MPIRUN[@]}" -np $P "$BIN" "${A[@]}" $variant --threads 1 --out "$T/oP.npy" \
        --lse "$T/lP.npy" --stats >"$T/run.txt" 2>&1 && [[ -f "$T/oP.npy" ]]; then
      if msg=$(compare "$T/oP.npy" "$T/o1.npy" 1e-5) && msg2=$(compare "$T/lP.npy" "$T/l1.npy" 1e-5); then
        ok "P=$P [$variant]: O $msg, L $msg2"
      else
        bad "P=$P [$variant]: O $msg, L ${msg2:-}"
      fi
    else
      bad "P=$P [$variant] did not produce its output: $(tail -5 "$T/run.txt")"
    fi
  done
  grep -q "ranks=4" "$T/run.txt" && grep -q "global_kv" "$T/run.txt" && grep -q "rank   3 halo" "$T/run.txt" \
    && ok "--stats reports per-rank traffic" || bad "--stats output: $(cat "$T/run.txt")"
done

# Bitwise repeatable for a fixed rank count.
for i in 1 2; do
  rm -f "$T/r$i.npy"
  "${MPIRUN[@]}" -np 3 "$BIN" "${A[@]}" --window 100 --threads 2 --out "$T/r$i.npy" >/dev/null 2>&1
done
[[ -f "$T/r1.npy" && -f "$T/r2.npy" ]] && cmp -s "$T/r1.npy" "$T/r2.npy" && ok "P=3 bitwise repeatable" \
  || bad "P=3 runs differ or are missing"

# Bad input under mpirun: non-zero, one error line, existing output untouched.
cp "$T/o1.npy" "$T/keep.npy"
"${MPIRUN[@]}" -np 3 "$BIN" attention --q "$T/s/q.npy" --k "$T/s/k.npy" --v "$T/s/v.npy" \
  --globals "$T/s/q.npy" --window 8 --out "$T/keep.npy" >"$T/err.txt" 2>&1
rc=$?
lines=$(grep -c "longctx attention: error" "$T/err.txt")
if [[ $rc -ne 0 && $lines -eq 1 ]] && cmp -s "$T/o1.npy" "$T/keep.npy"; then
  ok "bad globals under mpirun: rc=$rc, $(grep "longctx attention: error" "$T/err.txt")"
else
  bad "bad globals under mpirun: rc=$rc, $lines error lines: $(cat "$T/err.txt")"
fi

# A rank dying mid-run: the job ends non-zero within seconds, and the output says which rank.
start=$(date +%s)
LONGCTX_TEST_KILL_RANK=1 "${MPIRUN[@]}" -x LONGCTX_TEST_KILL_RANK -np 3 "$BIN" "${A[@]}" --window 64 \
  --out "$T/dead.npy" >"$T/dead.txt" 2>&1
rc=$?
secs=$(($(date +%s) - start))
if [[ $rc -ne 0 && $secs -le 60 && ! -f "$T/dead.npy" ]] && grep -qi "rank 1" "$T/dead.txt"; then
  ok "killed rank 1: rc=$rc after ${secs}s: $(grep -i "rank 1" "$T/dead.txt" | head -1)"
else
  bad "killed rank 1: rc=$rc after ${secs}s: $(cat "$T/dead.txt")"
fi

finish
