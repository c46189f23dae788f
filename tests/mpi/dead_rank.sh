#!/usr/bin/env bash
# A rank that dies must end the whole job: on 3 ranks, rank 1 kills itself (SIGKILL) after a
# barrier while ranks 0 and 2 wait on a receive from it with a 60 s deadline. Passes when
# mpirun exits non-zero within 20 s and its output names rank 1.
# Usage: dead_rank.sh BINARY   (the test binary; its --die-rank mode)
# Environment: MPIRUN (default mpirun).
set -uo pipefail

if (($# != 1)) || [[ ! -x $1 ]]; then
  echo "usage: $0 BINARY" >&2
  exit 2
fi
binary=$1
np=3
die=1
limit_s=20

out=$(mktemp)
trap 'rm -f "$out"' EXIT
start_ms=$(($(date +%s%N) / 1000000))
timeout --kill-after=10 60 "${MPIRUN:-mpirun}" -np "$np" --oversubscribe --allow-run-as-root \
  --mca btl self,vader,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo \
  --mca pml ob1 "$binary" --die-rank "$die" >"$out" 2>&1
rc=$?
elapsed_ms=$(($(date +%s%N) / 1000000 - start_ms))
cat "$out"
echo "dead_rank: mpirun exited $rc after ${elapsed_ms} ms"

fail() {
  echo "dead_rank: FAIL: $*" >&2
  exit 1
}
ready=$(grep -cE "longctx-mpi-test dead-rank: rank [0-9]+/$np ready" "$out")
((ready == np)) || fail "$ready of $np ranks started (the job did not really run)"
grep -qE "longctx-mpi-test dead-rank: rank $die/$np killing itself" "$out" ||
  fail "rank $die never got to kill itself"
((rc != 0)) || fail "mpirun exited 0 although rank $die died"
((rc != 124)) || fail "the job was still running after 60 s"
((elapsed_ms <= limit_s * 1000)) || fail "the job took ${elapsed_ms} ms to end (limit ${limit_s} s)"
grep -qE "rank $die( |\b)" <(grep -v "longctx-mpi-test" "$out") ||
  fail "mpirun's output does not name rank $die"
echo "dead_rank: PASS (rank $die died; the job ended with status $rc in ${elapsed_ms} ms)"
