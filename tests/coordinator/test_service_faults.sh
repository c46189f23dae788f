#!/usr/bin/env bash
# Faults of the control plane, with real processes on loopback:
#  1. a rank of the worker group is SIGKILLed mid-job (rank 1, not the one holding the
#     connection): the group is lost, the job goes back to the queue (status shows why), the
#     coordinator keeps serving, and when a second worker group registers the job completes there
#     with the same answer as `longctx run`;
#  2. the coordinator is restarted (SIGTERM, then the same port and --state-dir): finished results
#     are still there (`status --job`), the worker group reconnects by itself with backoff, and a
#     question on the document it kept runs without a new upload;
#  3. a job queued with no worker group connected survives another restart: the client waits
#     through it and gets the same answer once a new group registers.
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

# 1. Rank 1 dies (SIGKILL) as soon as the job reaches the group (LONGCTX_TEST_KILL_RANK hook); the
#    job is queued again and completes on a second group.
start_workers 2 "$PORT" "$T/doomed.log" LONGCTX_TEST_KILL_RANK=1
doomed=$MPIRUN_PID
wait_workers "$PORT" 1 60 || { bad "doomed worker group registers"; cat "$T/doomed.log"; exit 1; }
t0=$(date +%s.%N)
"$BIN" submit "${S[@]}" --input "$T/doc.txt" --doc-id d1 --query "Q?" --generate 4 \
  --out "$T/requeued" >"$T/requeued.log" 2>&1 &
sub=$!
pids+=("$sub")
requeued=0
for _ in $(seq 150); do
  if "$BIN" status "${S[@]:0:6}" 2>/dev/null | grep -qE "^  job 1 queued .*requeued=1"; then
    requeued=1; break
  fi
  sleep 0.1
done
secs=$(/usr/bin/python3 -c "print(f'{$(date +%s.%N)-$t0:.1f}')")
((requeued)) && ok "killed rank: job 1 queued again after ${secs} s" ||
  bad "killed rank: job 1 not requeued: $("$BIN" status "${S[@]:0:6}" 2>&1)"
for _ in $(seq 100); do kill -0 "$doomed" 2>/dev/null || break; sleep 0.1; done
kill -0 "$doomed" 2>/dev/null && bad "mpirun of the killed group still running" ||
  ok "mpirun ended the rest of the killed group"
start_workers 2 "$PORT" "$T/workers.log"
wait_workers "$PORT" 1 60 || { bad "new worker group registers"; cat "$T/workers.log"; exit 1; }
if wait "$sub"; then
  timeout 300 mpirun "${MPIRUN_ARGS[@]}" -np 2 "$BIN" run --threads 1 --progress off \
    --out "$T/ref1" --input "$T/doc.txt" --query "Q?" --generate 4 >"$T/ref1.log" 2>&1 &&
    d=$(same_as_run "$T/requeued" "$T/ref1") && ok "requeued job completed on the second group, equal to longctx run" ||
    bad "requeued job's result differs from longctx run: ${d:-$(tail -2 "$T/ref1.log")}"
else
  bad "requeued job did not complete: $(cat "$T/requeued.log")"
fi
"$BIN" status "${S[@]:0:6}" --job 1 >"$T/st1.log" 2>&1 && grep -q "attempts 2" "$T/st1.log" &&
  grep -q "requeued: worker group g1 .*lost mid-job" "$T/st1.log" &&
  ok "status --job 1: 2 attempts, the lost group recorded" || bad "status --job 1: $(cat "$T/st1.log")"
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

# 3. A job queued while no worker group is connected survives another restart: `submit` waits
#    through it (reconnecting) and gets the same answer as job 2 (same document and flags).
kill -TERM "$MPIRUN_PID"
for _ in $(seq 100); do kill -0 "$MPIRUN_PID" 2>/dev/null || break; sleep 0.1; done
wait_workers "$PORT" 0 20 || bad "the stopped worker group is still listed"
"$BIN" submit "${S[@]:0:6}" --progress on --input "$T/doc.txt" --doc-id d3 --query "Q?" \
  --generate 6 --out "$T/across" >"$T/across.log" 2>&1 &
sub=$!
pids+=("$sub")
for _ in $(seq 100); do
  "$BIN" status "${S[@]:0:6}" 2>/dev/null | grep -q "jobs queued 1," && break
  sleep 0.1
done
kill -TERM "$COORD_PID"
for _ in $(seq 100); do kill -0 "$COORD_PID" 2>/dev/null || break; sleep 0.1; done
start_coordinator "$PORT" "$T/coord3.log" || exit 1
"$BIN" status "${S[@]:0:6}" | grep -qE "^  job [0-9]+ queued doc=d3" &&
  ok "the queued job is still queued after the restart" ||
  bad "queued job after the restart: $("$BIN" status "${S[@]:0:6}" 2>&1)"
start_workers 2 "$PORT" "$T/workers3.log"
if wait "$sub" && cmp -s "$T/before/generated.txt" "$T/across/generated.txt"; then
  ok "submit waited through the restart: $(grep -m1 'waiting for job' "$T/across.log" | cut -c1-80)...; same answer"
else
  bad "job queued across the restart: $(tail -3 "$T/across.log")"
fi

finish test_service_faults
