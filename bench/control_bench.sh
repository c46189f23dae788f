#!/usr/bin/env bash
# Control-plane benchmark (bench/results/control.md): small-document jobs per second through the
# coordinator, and the overhead of a large job through the coordinator against `longctx run`
# directly (same rank count, same flags). Everything runs on loopback and is torn down at exit.
# Usage: control_bench.sh LONGCTX_BINARY [BIG_TOKENS (default 1048576)] [SMALL_JOBS (default 400)]
set -uo pipefail
BIN=${1:?usage: control_bench.sh LONGCTX_BINARY [BIG_TOKENS] [SMALL_JOBS]}
BIG=${2:-1048576}
JOBS=${3:-400}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
T=$(mktemp -d)
source "$ROOT/tests/coordinator/lib_service.sh"
trap 'cleanup; rm -rf "$T"' EXIT
export LONGCTX_COMM_TIMEOUT_S=${LONGCTX_COMM_TIMEOUT_S:-300}
unset LONGCTX_TOKEN
head -c 32 /dev/urandom | base64 >"$T/token"
now() { date +%s.%N; }
calc() { /usr/bin/python3 -c "print($1)"; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$ROOT/launch/make_document.sh" 2048 "$T/small.txt"
"$ROOT/launch/make_document.sh" "$BIG" "$T/big.txt"

# Small jobs: a 2 KiB document + a 2-byte question + 4 generated tokens, C clients each sending
# JOBS/C jobs one after another on its own connection, against G worker groups of R ranks.
# With HELD=1, each client first uploads its document once, then sends questions on it (1
# generated token, no prefill): what remains is the control plane's own round trip.
small_jobs() {  # small_jobs GROUPS RANKS CLIENTS
  local groups=$1 ranks=$2 clients=$3 port
  port=$(free_port)
  start_coordinator "$port" "$T/coord-$groups-$ranks-$clients.log" || return 1
  local coord=$COORD_PID
  local wpids=()
  for g in $(seq "$groups"); do
    start_workers "$ranks" "$port" "$T/w-$groups-$ranks-$g.log"
    wpids+=("$MPIRUN_PID")
  done
  wait_workers "$port" "$groups" 60 || { echo "workers did not register"; return 1; }
  local per=$((JOBS / clients)) t0 t1 cp=() job=(--input "$T/small.txt" --query "Q?" --generate 4)
  local ids=("s")
  if [[ ${HELD:-0} == 1 ]]; then  # one document, uploaded once, asked by every client
    "$BIN" submit --coordinator "127.0.0.1:$port" --token-file "$T/token" --progress off \
      --input "$T/small.txt" --doc-id held --generate 1 >/dev/null 2>&1 || echo "upload failed"
    job=(--generate 1)
    ids=("held")
  fi
  t0=$(now)
  for c in $(seq "$clients"); do
    local id="${ids[0]}"
    [[ $id == s ]] && id="s$c"
    "$BIN" submit --coordinator "127.0.0.1:$port" --token-file "$T/token" --progress off \
      --doc-id "$id" "${job[@]}" --repeat "$per" >"$T/client-$c.log" 2>&1 &
    cp+=($!)
  done
  local failed=0
  for p in "${cp[@]}"; do wait "$p" || failed=$((failed + 1)); done
  t1=$(now)
  echo "| $groups x $ranks ranks | $clients | $((per * clients)) | $failed | $(calc "f'{$t1-$t0:.2f}'") | $(calc "f'{$((per * clients))/($t1-$t0):.1f}'") |"
  for p in "${wpids[@]}" "$coord"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${wpids[@]}" "$coord"; do wait "$p" 2>/dev/null; done
}
echo
echo "## Small-document jobs per second"
echo "| worker groups | clients | jobs | failed | seconds | jobs/s |"
echo "|---|---|---|---|---|---|"
small_jobs 1 2 1
small_jobs 1 2 8
small_jobs 2 1 8
echo
echo "## Questions on a held document (1 generated token, no prefill): the control plane's round trip"
echo "| worker groups | clients | jobs | failed | seconds | jobs/s |"
echo "|---|---|---|---|---|---|"
HELD=1 small_jobs 1 2 1
HELD=1 small_jobs 1 2 8

# The large job: `mpirun -np 2 longctx run` vs the same through the coordinator (the worker group
# already running, as a service is).
echo
echo "## $BIG-token job: coordinator vs longctx run (2 ranks, --generate 8)"
t0=$(now)
mpirun "${MPIRUN_ARGS[@]}" -np 2 "$BIN" run --threads 1 --progress off --input "$T/big.txt" \
  --generate 8 --out "$T/run" >"$T/run.log" 2>&1 || { echo "run failed: $(tail -3 "$T/run.log")"; exit 1; }
t1=$(now)
run_wall=$(calc "$t1-$t0")
run_compute=$(/usr/bin/python3 -c "
import json; r=json.load(open('$T/run/report.json')); s=r['seconds']; print(s['prefill']+s['decode'])")
port=$(free_port)
start_coordinator "$port" "$T/coord-big.log" || exit 1
start_workers 2 "$port" "$T/w-big.log"
wait_workers "$port" 1 60 || { echo "workers did not register"; exit 1; }
t0=$(now)
"$BIN" submit --coordinator "127.0.0.1:$port" --token-file "$T/token" --progress off \
  --input "$T/big.txt" --doc-id big --generate 8 --out "$T/sub" >"$T/sub.log" 2>&1 ||
  { echo "submit failed: $(tail -3 "$T/sub.log")"; exit 1; }
t1=$(now)
sub_wall=$(calc "$t1-$t0")
sub_compute=$(/usr/bin/python3 -c "import json; print(json.load(open('$T/sub/result.json'))['seconds']['total'])")
same=$(cmp -s "$T/run/generated.txt" "$T/sub/generated.txt" && echo yes || echo NO)
echo "| path | wall s | prefill+decode s (as reported) | wall - compute s |"
echo "|---|---|---|---|"
echo "| mpirun -np 2 longctx run (process start, model load, prefill, decode, outputs) | $(calc "f'{$run_wall:.2f}'") | $(calc "f'{$run_compute:.2f}'") | $(calc "f'{$run_wall-$run_compute:.2f}'") |"
echo "| longctx submit through the coordinator (upload, queue, prefill, decode, result) | $(calc "f'{$sub_wall:.2f}'") | $(calc "f'{$sub_compute:.2f}'") | $(calc "f'{$sub_wall-$sub_compute:.2f}'") |"
echo
echo "ratio submit wall / run wall: $(calc "f'{$sub_wall/$run_wall:.3f}'"); coordinator path overhead beyond compute: $(calc "f'{$sub_wall-$sub_compute:.2f}'") s ($(calc "f'{100*($sub_wall-$sub_compute)/$sub_wall:.1f}'")% of its wall); generated text identical: $same"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
