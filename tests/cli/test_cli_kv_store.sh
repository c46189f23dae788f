#!/usr/bin/env bash
# `longctx run` with its KV spilled to `longctx store` processes over UCX (DESIGN.md §3), and a
# store process killed between the prefill and the decode (LONGCTX_TEST_PAUSE_FILE holds the job
# there while the test kills it):
#   - replicas=2: the run completes with hidden states and tokens bitwise equal to a resident run;
#   - replicas=1: the run fails within seconds with one error line naming the lost block.
# Also: ranks lending pools to each other (--kv-pool) give the same bitwise result.
# Usage: test_cli_kv_store.sh path/to/longctx   (UCX_TLS from the environment: tcp, sm, ...)
set -uo pipefail
BIN="$1"
T="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  [[ -n "${KEEP:-}" ]] || rm -rf "$T"  # KEEP=1 keeps the logs
}
trap cleanup EXIT
PY=/usr/bin/python3
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"
MPI=(mpirun --oversubscribe --allow-run-as-root --mca btl self,vader,tcp --mca btl_tcp_if_include lo
     --mca oob_tcp_if_include lo --mca pml ob1 -x UCX_TLS -x LONGCTX_TEST_PAUSE_FILE)
export UCX_TLS="${UCX_TLS:-tcp}"
export LONGCTX_TEST_PAUSE_FILE=""

"$HERE/../../launch/make_document.sh" 30000 "$T/doc.txt"
R=(run --progress off --threads 1 --input "$T/doc.txt" --global-max 32 --query "Who pays? "
   --generate 6 --dump-hidden --kv-block-tokens 64)
# Everything outside the persistent set goes to the remote tier: no host tier at all.
SPILL=(--kv-device-budget 1M --kv-host-budget 0)

start_store() {  # start_store NAME -> sets $addr; the pid joins PIDS
  local name="$1"
  "$BIN" store --pool 64M --listen 127.0.0.1:0 --address-file "$T/$name.addr" \
    --token-file "$T/store.token" >"$T/$name.log" 2>&1 &
  PIDS+=($!)
  eval "${name}_pid=$!"
  for _ in $(seq 1 200); do [[ -s "$T/$name.addr" ]] && break; sleep 0.05; done
  [[ -s "$T/$name.addr" ]] || { bad "store $name did not start: $(cat "$T/$name.log")"; return 1; }
}

timeout 300 "${MPI[@]}" -np 2 "$BIN" "${R[@]}" --out "$T/base" >"$T/base.log" 2>&1 \
  && ok "resident run" || bad "resident run: $(tail -3 "$T/base.log")"

# Ranks lending pools to each other.
timeout 300 "${MPI[@]}" -np 3 "$BIN" "${R[@]}" "${SPILL[@]}" --kv-pool 32M --out "$T/pools" \
  >"$T/pools.log" 2>&1 && ok "run spilling to the ranks' pools" || bad "rank pools: $(tail -3 "$T/pools.log")"
timeout 300 "${MPI[@]}" -np 3 "$BIN" "${R[@]}" --out "$T/base3" >"$T/base3.log" 2>&1
cmp -s "$T/base3/hidden.npy" "$T/pools/hidden.npy" && ok "rank pools: bitwise equal to resident" \
  || bad "rank pools: hidden states differ"
"$PY" -c "
import json,sys; r=json.load(open('$T/pools/report.json'))['kv']
assert r['remote']['peak_bytes'] > 0 and r['host']['peak_bytes'] == 0 and r['loads'] > 0, r" \
  && ok "rank pools: blocks went remote and came back" || bad "rank pools: report"

# A killed store process, replicas 2 then 1.
for replicas in 2 1; do
  start_store "s1_$replicas" || continue
  start_store "s2_$replicas" || continue
  a1=$(cat "$T/s1_$replicas.addr"); a2=$(cat "$T/s2_$replicas.addr")
  pause="$T/pause_$replicas"
  out="$T/r$replicas"
  LONGCTX_TEST_PAUSE_FILE="$pause" timeout 300 "${MPI[@]}" -np 2 "$BIN" "${R[@]}" "${SPILL[@]}" \
    --kv-store "$a1,$a2" --kv-store-token-file "$T/store.token" --kv-replicas "$replicas" \
    --out "$out" >"$out.out" 2>"$out.err" &
  job=$!
  PIDS+=($job)
  for _ in $(seq 1 1200); do [[ -f "$pause" ]] && break; sleep 0.05; done
  if [[ ! -f "$pause" ]]; then bad "replicas $replicas: the job never reached the pause"; continue; fi
  victim="s1_${replicas}_pid"
  kill -9 "${!victim}"
  t0=$(date +%s.%N)
  rm -f "$pause"
  wait "$job"
  rc=$?
  secs=$("$PY" -c "import time; print(round(time.time() - $t0, 1))")
  if [[ $replicas -eq 2 ]]; then
    [[ $rc -eq 0 ]] && cmp -s "$T/base/hidden.npy" "$out/hidden.npy" \
      && cmp -s "$T/base/generated.txt" "$out/generated.txt" \
      && ok "replicas 2: a killed store changes nothing (${secs} s)" \
      || bad "replicas 2: rc=$rc: $(tail -3 "$out.err")"
  else
    lines=$(grep -c 'error' "$out.err")
    if [[ $rc -ne 0 ]] && grep -q 'seq [0-9]* layer [0-9]* block [0-9]*' "$out.err" \
       && "$PY" -c "import sys; sys.exit(0 if $secs < 30 else 1)"; then
      ok "replicas 1: fails in ${secs} s naming the block: $(grep -m1 error "$out.err")"
    else
      bad "replicas 1: rc=$rc after ${secs} s, $lines error lines: $(head -c 600 "$out.err")"
    fi
  fi
  kill "${!victim}" "$(eval echo "\$s2_${replicas}_pid")" 2>/dev/null
done

# The token: the store created it (mode 0600); a run without it, or with another, is refused in
# the hello with one line naming the store.
if start_store "s_auth"; then
  a=$(cat "$T/s_auth.addr")
  [[ "$(stat -c %a "$T/store.token")" == 600 ]] && ok "token file created with mode 600" \
    || bad "token file mode $(stat -c %a "$T/store.token")"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/other.token"; chmod 600 "$T/other.token"
  expect_error "no store token" "${R[@]}" "${SPILL[@]}" --kv-store "$a" --out "$T/x"
  grep -q "refused: wrong or missing store token" "$T/stderr" && ok "no token: refused by the store" \
    || bad "no token: $(cat "$T/stderr")"
  expect_error "wrong store token" "${R[@]}" "${SPILL[@]}" --kv-store "$a" \
    --kv-store-token-file "$T/other.token" --out "$T/x"
  grep -q "refused: wrong or missing store token" "$T/stderr" \
    && ok "wrong token: refused by the store" || bad "wrong token: $(cat "$T/stderr")"
  kill "$s_auth_pid" 2>/dev/null
fi
expect_error "replicas 3" "${R[@]}" --kv-store 127.0.0.1:1 --kv-replicas 3 --out "$T/x"
expect_error "unreachable store" "${R[@]}" --kv-store 127.0.0.1:1 --out "$T/x"
expect_error "malformed pool size" "${R[@]}" --kv-pool 3X --out "$T/x"

finish
