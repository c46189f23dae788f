#!/usr/bin/env bash
# Runs a longctx MPI test binary on NP local ranks. Passes only when mpirun exits 0 AND every
# rank R printed "longctx-mpi-test rank R/NP: N passed, 0 failed" exactly once with N > 0: as root
# without --allow-run-as-root, mpirun exits 0 without running anything, and a gtest filter that
# matches nothing (or tests that all skip) exits 0 having checked nothing, so neither status alone
# proves anything.
# Usage: run_mpi_test.sh NP BINARY [ARGS...]
# Environment: MPIRUN (default mpirun), MPI_TEST_TIMEOUT_S (default 300).
set -uo pipefail

if (($# < 2)) || ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NP BINARY [ARGS...]" >&2
  exit 2
fi
np=$1
binary=$2
shift 2
if [[ ! -x $binary ]]; then
  echo "run_mpi_test: $binary is not an executable" >&2
  exit 2
fi
timeout_s=${MPI_TEST_TIMEOUT_S:-300}

out=$(mktemp)
trap 'rm -f "$out"' EXIT
# Loopback-only, oversubscribed, ob1 (docs: shared/notes/verified-on-these-machines.md).
timeout --kill-after=10 "$timeout_s" "${MPIRUN:-mpirun}" -np "$np" --oversubscribe \
  --allow-run-as-root --mca btl self,vader,tcp --mca btl_tcp_if_include lo \
  --mca oob_tcp_if_include lo --mca pml ob1 "$binary" "$@" >"$out" 2>&1
rc=$?
cat "$out"

fail() {
  echo "run_mpi_test: FAIL (np=$np): $*" >&2
  exit 1
}
((rc != 124)) || fail "timed out after ${timeout_s} s"
((rc == 0)) || fail "mpirun exited $rc"
reports=$(grep -cE "longctx-mpi-test rank [0-9]+/[0-9]+: " "$out")
((reports == np)) || fail "$reports rank reports for $np ranks"
for ((r = 0; r < np; ++r)); do
  n=$(grep -cE "longctx-mpi-test rank $r/$np: [0-9]+ passed, 0 failed\$" "$out")
  ((n == 1)) || fail "rank $r/$np did not report exactly once with 0 failed (found $n)"
  grep -qE "longctx-mpi-test rank $r/$np: [1-9][0-9]* passed, 0 failed\$" "$out" ||
    fail "rank $r/$np passed no test (a filter that matches nothing, or every test skipped)"
done
echo "run_mpi_test: PASS (np=$np, all $np ranks report N > 0 passed, 0 failed)"
