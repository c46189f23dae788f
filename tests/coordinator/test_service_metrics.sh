#!/usr/bin/env bash
# Prometheus metrics end to end (docs/metrics.md): a real Prometheus server (Debian's
# /usr/bin/prometheus; launch/install-deps.sh installs it, this test installs nothing) scrapes
# `longctx coordinator --metrics-listen` and `longctx store --metrics-listen` every second while a
# worker group (mpirun -np 2, spilling KV blocks to the store) runs two jobs; the test then asks
# Prometheus's HTTP API for the series and checks them against what the jobs did: both targets
# up (Prometheus parsed the OpenMetrics text), 2 jobs submitted/started/done, none failed or
# queued, the phase histograms' counts, the run phase at least the worker group's own seconds,
# the store's pool size exactly, blocks and bytes in use while the group holds the document, and
# the worker-group gauge back to 0 once the group is killed. Every wait has a deadline.
# Usage: test_service_metrics.sh LONGCTX_BINARY
set -uo pipefail
BIN=${1:?usage: test_service_metrics.sh LONGCTX_BINARY}
HERE=$(cd "$(dirname "$0")" && pwd)
PROMETHEUS=${PROMETHEUS:-/usr/bin/prometheus}
if [[ ! -x "$PROMETHEUS" ]]; then
  echo "FAIL: $PROMETHEUS is missing (launch/install-deps.sh installs Debian's prometheus)"
  exit 1
fi
T=$(mktemp -d)
source "$HERE/lib_service.sh"
trap 'cleanup; rm -rf "$T"' EXIT
export LONGCTX_COMM_TIMEOUT_S=${LONGCTX_COMM_TIMEOUT_S:-60}
export UCX_TLS="${UCX_TLS:-tcp}"
unset LONGCTX_TOKEN
t_start=$(date +%s.%N)

head -c 32 /dev/urandom | base64 >"$T/token"
chmod 600 "$T/token"
PORT=$(free_port); MC=$(free_port); MS=$(free_port); MW=$(free_port); PP=$(free_port)

# wait_line LOG PATTERN PID SECONDS
wait_line() {
  for _ in $(seq $(($4 * 10))); do
    grep -qs "$2" "$1" && return 0
    kill -0 "$3" 2>/dev/null || break
    sleep 0.1
  done
  return 1
}

# The store, lending 64 MiB, with its metrics endpoint.
"$BIN" store --pool 64M --listen 127.0.0.1:0 --address-file "$T/store.addr" \
  --token-file "$T/store.token" --metrics-listen "$MS" >"$T/store.log" 2>&1 &
STORE_PID=$!
pids+=("$STORE_PID")
wait_line "$T/store.log" "metrics on http://127.0.0.1:$MS/metrics" "$STORE_PID" 15 ||
  { bad "store starts with --metrics-listen $MS: $(cat "$T/store.log")"; exit 1; }
ok "store on $(cat "$T/store.addr"), metrics on port $MS"

start_coordinator "$PORT" "$T/coord.log" --metrics-listen "127.0.0.1:$MC" --worker-timeout 2 ||
  exit 1
wait_line "$T/coord.log" "metrics on http://127.0.0.1:$MC/metrics" "$COORD_PID" 5 ||
  { bad "coordinator prints its metrics address: $(cat "$T/coord.log")"; exit 1; }
ok "coordinator on port $PORT, metrics on port $MC"

# Bad --metrics-listen values: one line on stderr, non-zero exit.
BADC=(coordinator --listen "127.0.0.1:0" --token-file "$T/token" --worker-token-file "$T/worker-token"
      --state-dir "$T/state2")
expect_error "coordinator --metrics-listen abc" "${BADC[@]}" --metrics-listen abc
expect_error "coordinator --metrics-listen on a port in use" "${BADC[@]}" --metrics-listen "$MC"
expect_error "store --metrics-listen 70000" store --pool 1M --insecure-no-auth --metrics-listen 70000

# Prometheus: the endpoints every second, a private TSDB in $T.
cat >"$T/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: coordinator
    static_configs: [{targets: ['127.0.0.1:$MC']}]
  - job_name: store
    static_configs: [{targets: ['127.0.0.1:$MS']}]
  - job_name: worker
    static_configs: [{targets: ['127.0.0.1:$MW']}]
EOF
"$PROMETHEUS" --config.file "$T/prometheus.yml" --storage.tsdb.path "$T/tsdb" \
  --web.listen-address "127.0.0.1:$PP" --log.level warn >"$T/prometheus.log" 2>&1 &
PROM_PID=$!
pids+=("$PROM_PID")

# query EXPR CONDITION SECONDS: polls Prometheus's /api/v1/query until every returned sample's
# value v satisfies the Python CONDITION (and there is at least one), within SECONDS.
cat >"$T/query.py" <<'PY'
import json, sys, time, urllib.parse, urllib.request
port, expr, cond, secs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
deadline = time.monotonic() + secs
last = "no answer"
while time.monotonic() < deadline:
    try:
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=2) as r:
            res = json.load(r)["data"]["result"]
        vals = [float(s["value"][1]) for s in res]
        last = vals
        if vals and all(eval(cond, {"v": v}) for v in vals):
            print(vals[0] if len(vals) == 1 else vals)
            sys.exit(0)
    except Exception as e:
        last = f"{type(e).__name__}: {e}"
    time.sleep(0.25)
print(f"{expr}: {cond} not met within {secs} s; last: {last}")
sys.exit(1)
PY
query() { /usr/bin/python3 "$T/query.py" "$PP" "$@"; }
check() {  # check NAME EXPR CONDITION [SECONDS]
  local name=$1 out; shift
  if out=$(query "$1" "$2" "${3:-20}"); then ok "$name: $1 = $out"; else bad "$name: $out"; fi
}

check "Prometheus scrapes the coordinator" 'up{job="coordinator"}' 'v == 1' 30
check "Prometheus scrapes the store" 'up{job="store"}' 'v == 1' 30
check "no worker group yet" 'longctx_worker_groups' 'v == 0'

# The worker group: every KV block outside the persistent set goes to the store.
mpirun "${MPIRUN_ARGS[@]}" -np 2 "$BIN" worker --coordinator "127.0.0.1:$PORT" \
  --worker-token-file "$T/worker-token" --threads 1 --kv-device-budget 1M --kv-host-budget 0 \
  --kv-block-tokens 64 --global-max 32 --kv-store "$(cat "$T/store.addr")" \
  --kv-store-token-file "$T/store.token" --metrics-listen "$MW" >"$T/workers.log" 2>&1 &
MPIRUN_PID=$!
pids+=("$MPIRUN_PID")
wait_workers "$PORT" 1 60 || { bad "worker group registers: $(tail -5 "$T/workers.log")"; exit 1; }
check "worker group alive" 'longctx_worker_groups' 'v == 1'
check "Prometheus scrapes the worker group's rank 0" 'up{job="worker"}' 'v == 1' 30

"$HERE/../../launch/make_document.sh" 30000 "$T/doc.txt"
S=(--coordinator "127.0.0.1:$PORT" --token-file "$T/token" --timeout 300 --progress off)
"$BIN" submit "${S[@]}" --input "$T/doc.txt" --doc-id doc --query "Who pays? " --generate 6 \
  --out "$T/sub1" >"$T/sub1.log" 2>&1 && ok "job 1 (document + question) done" ||
  bad "job 1: $(tail -3 "$T/sub1.log")"
# After job 1 alone, rank 0's bytes equal result.json's comm_bytes (rank 0's sent + received).
bytes1=$(/usr/bin/python3 -c "import json; print(json.load(open('$T/sub1/result.json'))['comm_bytes'])" 2>/dev/null)
check "worker: bytes sent + received after job 1 = result.json's comm_bytes (${bytes1:-?})" \
  'sum(longctx_worker_comm_bytes_total)' "v == ${bytes1:--1}"
"$BIN" submit "${S[@]}" --doc-id doc --query "And when? " --generate 4 --out "$T/sub2" \
  >"$T/sub2.log" 2>&1 && ok "job 2 (question on the held document) done" ||
  bad "job 2: $(tail -3 "$T/sub2.log")"
# The worker group's own seconds per job (result.json), summed: the run phase covers them.
worker_s=$(/usr/bin/python3 -c "
import json; print(sum(json.load(open(f'$T/sub{i}/result.json'))['seconds']['total'] for i in (1, 2)))" 2>/dev/null)
[[ -n "$worker_s" ]] || worker_s=1e9  # no result.json: the check below fails

check "2 jobs submitted" 'longctx_jobs_total{event="submitted"}' 'v == 2'
check "2 jobs started" 'longctx_jobs_total{event="started"}' 'v == 2'
check "2 jobs done" 'longctx_jobs_total{event="done"}' 'v == 2'
check "no job failed or requeued" \
  'sum(longctx_jobs_total{event=~"failed|requeued"})' 'v == 0'
check "nothing queued or running" 'longctx_jobs_queued + longctx_jobs_running' 'v == 0'
check "total phase counted twice" 'longctx_job_phase_seconds_count{phase="total"}' 'v == 2'
check "+Inf bucket equals the count" \
  'longctx_job_phase_seconds_bucket{phase="run",le="+Inf"} - ignoring(le) longctx_job_phase_seconds_count{phase="run"}' \
  'v == 0'
check "queue_wait observed per dispatch" 'longctx_job_phase_seconds_count{phase="queue_wait"}' 'v == 2'
check "one prefill (job 2 reused the document)" 'longctx_job_phase_seconds_count{phase="prefill"}' 'v == 1'
check "run phase >= the worker group's seconds ($worker_s s)" \
  'longctx_job_phase_seconds_sum{phase="run"}' "v >= $worker_s - 1e-3 and v < 300"
check "run <= total" \
  'longctx_job_phase_seconds_sum{phase="total"} - ignoring(phase) longctx_job_phase_seconds_sum{phase="run"}' 'v >= 0'
check "store pool size" 'longctx_store_pool_bytes' 'v == 64 * 1024 * 1024'
check "store holds the spilled blocks" 'longctx_store_blocks' 'v > 0'
check "store bytes in use" 'longctx_store_pool_used_bytes' 'v > 0 and v <= 64 * 1024 * 1024'
check "store sessions (one per rank)" 'longctx_store_sessions' 'v == 2'
check "no refused hello at the store" 'longctx_store_refused_hellos_total' 'v == 0'

# Rank 0 of the worker group, against the two results (result.json: rank 0's figures).
read -r doc_tokens appended comm_bytes < <(/usr/bin/python3 -c "
import json; r = [json.load(open(f'$T/sub{i}/result.json')) for i in (1, 2)]
print(r[0]['document_tokens'], sum(len(x['appended_tokens']) for x in r), sum(x['comm_bytes'] for x in r))" 2>/dev/null)
check "worker: 2 jobs done" 'longctx_worker_jobs_total{outcome="done"}' 'v == 2'
check "worker: prefill tokens = the document's ${doc_tokens:-?}" \
  'longctx_worker_tokens_total{phase="prefill"}' "v == ${doc_tokens:--1}"
check "worker: decode tokens = appended tokens of both jobs (${appended:-?})" \
  'longctx_worker_tokens_total{phase="decode"}' "v == ${appended:--1}"
# (Job 2's comm_bytes also counts the held document's prefill traffic again; the counter does not.)
check "worker: job 2 moved bytes too, fewer than its comm_bytes claims" \
  'sum(longctx_worker_comm_bytes_total)' "v > ${bytes1:--1} and v < ${comm_bytes:--1}"
check "worker: prefill tokens/s" 'longctx_worker_tokens_per_second{phase="prefill"}' 'v > 0'
check "worker: bytes per layer moved" 'sum(longctx_worker_layer_bytes)' 'v > 0'
check "worker: KV blocks in the remote tier" 'longctx_worker_kv_blocks{tier="remote"}' 'v > 0'
check "worker: KV bytes in the remote tier" 'longctx_worker_kv_bytes{tier="remote"}' 'v > 0'
check "worker: prefetch hidden share in [0, 1]" 'longctx_worker_kv_prefetch_hidden_ratio' \
  'v >= 0 and v <= 1'

# The worker group stops: its connection closes and the gauge drops.
# (SIGTERM: mpirun takes its ranks down with it.)
kill -TERM "$MPIRUN_PID" 2>/dev/null
check "worker group gone" 'longctx_worker_groups' 'v == 0' 30
check "its endpoint gone" 'up{job="worker"}' 'v == 0' 30
# The endpoint itself: 404 elsewhere, the OpenMetrics content type.
if /usr/bin/python3 - "$MC" <<'PY'
import sys, urllib.request, urllib.error
port = sys.argv[1]
r = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
assert r.headers["Content-Type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8", r.headers
assert r.read().decode().endswith("# EOF\n")
try:
    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5); sys.exit(1)
except urllib.error.HTTPError as e:
    assert e.code == 404, e.code
PY
then ok "GET /metrics: OpenMetrics content type, # EOF; GET /: 404"; else bad "endpoint checks"; fi
kill -0 "$COORD_PID" 2>/dev/null && ok "coordinator alive" || bad "coordinator died: $(tail "$T/coord.log")"

t_end=$(date +%s.%N)
echo "test_service_metrics: $passed passed, $failed failed ($(/usr/bin/python3 -c "print(f'{$t_end-$t_start:.1f}')") s)"
((failed == 0))
