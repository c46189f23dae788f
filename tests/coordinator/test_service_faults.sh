#!/usr/bin/env bash
# Faults of the control plane, with real processes on loopback:
#  1. a rank of the worker group is SIGKILLed mid-job (rank 1, not the one holding the
#     connection): the job fails within 10 s with a clear error, the coordinator keeps serving,
#     and a new worker group then runs jobs;
#  2. the coordinator is restarted (SIGTERM, then the same port and --state-dir): finished results
#     are still there (`status --job`), the worker group reconnects by itself with backoff, and a
#     question on the document it kept runs without a new upload.
# Usage: test_service_faults.sh LONGCTX_BINARY
set -uo pipefail
BIN=${1:?usage: test_service_faults.sh LONGCTX_BINARY}
T=$(mktemp -d)
source "$(dirname "$0")/lib_service.sh"
trap 'cleanup; rm -rf "$T"' EXIT
export LONGCTX_COMM_TIMEOUT_S=${LONGCTX_COMM_TIMEOUT_S:-60}
unset LONGCTX_TOKEN

head -c 32 /dev/urandom | base64 >"$T/token"
PORT=$(free_port)
S=(--coordinator "127.0.0.1:$PORT" --token-file "$T/token" --timeout 120 --progress off)
start_coordinator "$PORT" "$T/coord.log" || exit 1
/usr/bin/python3 -c "
import random; random.seed(3)
print(' '.join(random.choice(['one','two.','three,','four!','\n\n']) for _ in range(3000)))
" >"$T/doc.txt"

# 1. Rank 1 dies (SIGKILL) as soon as the job reaches the group (LONGCTX_TEST_KILL_RANK hook).
start_workers 2 "$PORT" "$T/doomed.log" LONGCTX_TEST_KILL_RANK=1
doomed=$MPIRUN_PID
wait_workers "$PORT" 1 60 || { bad "doomed worker group registers"; cat "$T/doomed.log"; exit 1; }
t0=$(date +%s.%N)
"$BIN" submit "${S[@]}" --input "$T/doc.txt" --doc-id d1 --generate 4 >"$T/killed.log" 2>&1
rc=$?
secs=$(/usr/bin/python3 -c "print(f'{$(date +%s.%N)-$t0:.1f}')")
if ((rc != 0)) && grep -q "lost mid-job" "$T/killed.log" &&
   /usr/bin/python3 -c "import sys; sys.exit(0 if $secs < 10 else 1)"; then
  ok "killed rank: job failed in ${secs} s: $(head -1 "$T/killed.log")"
else
  bad "killed rank: rc=$rc after ${secs} s: $(cat "$T/killed.log")"
fi
[[ $(wc -l <"$T/killed.log") -eq 1 ]] || bad "killed rank: more than one line on stderr"
for _ in $(seq 100); do kill -0 "$doomed" 2>/dev/null || break; sleep 0.1; done
kill -0 "$doomed" 2>/dev/null && bad "mpirun of the killed group still running" ||
  ok "mpirun ended the rest of the killed group"
"$BIN" status "${S[@]:0:6}" >"$T/st1.log" 2>&1 && grep -q "job 1 failed" "$T/st1.log" &&
  ok "coordinator still serves; job 1 recorded as failed" || bad "status after the kill: $(cat "$T/st1.log")"

start_workers 2 "$PORT" "$T/workers.log"
wait_workers "$PORT" 1 60 || { bad "new worker group registers"; cat "$T/workers.log"; exit 1; }
if "$BIN" submit "${S[@]}" --input "$T/doc.txt" --doc-id d1 --query "Q?" --generate 6 \
    --out "$T/before" >"$T/before.log" 2>&1; then
  ok "a new worker group runs jobs after the failure"
else
  bad "job on the new group: $(cat "$T/before.log")"
fi
job=$(grep -oE "^job [0-9]+" "$T/before.log" | head -1 | grep -oE "[0-9]+")

# 2. Restart the coordinator on the same port with the same state directory.
kill -TERM "$COORD_PID"
for _ in $(seq 100); do kill -0 "$COORD_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$COORD_PID" 2>/dev/null && bad "coordinator ignored SIGTERM" || ok "coordinator stopped on SIGTERM"
start_coordinator "$PORT" "$T/coord2.log" || exit 1
if "$BIN" status "${S[@]:0:6}" --job "$job" --out "$T/after" >"$T/st2.log" 2>&1 &&
   cmp -s "$T/before/generated.txt" "$T/after/generated.txt" &&
   cmp -s "$T/before/result.json" "$T/after/result.json"; then
  ok "finished job $job and its result survive the restart"
else
  bad "result after restart: $(cat "$T/st2.log")"
fi
t0=$(date +%s.%N)
if wait_workers "$PORT" 1 30; then
  ok "worker group reconnected after $(/usr/bin/python3 -c "print(f'{$(date +%s.%N)-$t0:.1f}')") s"
else
  bad "worker group did not reconnect: $(tail -5 "$T/workers.log")"
fi
"$BIN" status "${S[@]:0:6}" | grep -q "documents=\[d1\]" && ok "reconnected group reports document d1" ||
  bad "reconnected group does not report d1"
if "$BIN" submit "${S[@]}" --doc-id d1 --query "Q?" --generate 6 --out "$T/again" >"$T/again.log" 2>&1 &&
   cmp -s "$T/before/generated.txt" "$T/again/generated.txt" &&
   grep -q '"prefilled": false' "$T/again/result.json"; then
  ok "question on the kept document after the restart: same answer, no prefill"
else
  bad "question after restart: $(cat "$T/again.log")"
fi

echo "test_service_faults: $passed passed, $failed failed"
((failed == 0))
