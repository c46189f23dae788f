# Shared by the control-plane service tests (source after setting BIN and T): start a
# coordinator and an mpirun worker group on loopback, wait for them with deadlines, and stop them
# (by pid) on exit. Every process a test starts is recorded here and killed by `cleanup`.
source "$(dirname "${BASH_SOURCE[0]}")/../cli/lib.sh"

MPIRUN_ARGS=(--oversubscribe --allow-run-as-root --mca btl self,vader,tcp --mca btl_tcp_if_include lo
             --mca oob_tcp_if_include lo --mca pml ob1)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
}

# A TCP port that is free now (the coordinator's restart needs a fixed one).
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The worker groups' token, separate from the clients' $T/token (made once per test directory).
worker_token() {
  [[ -s "$T/worker-token" ]] || { head -c 32 /dev/urandom | base64 >"$T/worker-token"; chmod 600 "$T/worker-token"; }
}

# start_coordinator PORT LOG [ARGS...]: sets COORD_PID; fails unless it listens within 15 s.
start_coordinator() {
  local port=$1 log=$2; shift 2
  worker_token
  "$BIN" coordinator --listen "127.0.0.1:$port" --token-file "$T/token" \
    --worker-token-file "$T/worker-token" --state-dir "$T/state" "$@" >"$log" 2>&1 &
  COORD_PID=$!
  pids+=("$COORD_PID")
  for _ in $(seq 150); do
    grep -q "listening on" "$log" && return 0
    kill -0 "$COORD_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "coordinator did not start: $(cat "$log")"
  return 1
}

# start_workers NP PORT LOG [ENV=VALUE...]: an mpirun worker group; sets MPIRUN_PID.
start_workers() {
  local np=$1 port=$2 log=$3; shift 3
  worker_token
  env "$@" mpirun "${MPIRUN_ARGS[@]}" -np "$np" "$BIN" worker --coordinator "127.0.0.1:$port" \
    --worker-token-file "$T/worker-token" --threads 1 >"$log" 2>&1 &
  MPIRUN_PID=$!
  pids+=("$MPIRUN_PID")
}

# wait_workers PORT N SECONDS: until `status` shows N worker groups.
wait_workers() {
  local port=$1 n=$2 secs=$3
  for _ in $(seq $((secs * 5))); do
    if "$BIN" status --coordinator "127.0.0.1:$port" --token-file "$T/token" --timeout 5 \
        2>/dev/null | grep -q "^workers: $n group"; then
      return 0
    fi
    sleep 0.2
  done
  return 1
}

# same_as_run SUBMIT_OUT RUN_OUT: the job's result equals `longctx run`'s outputs (appended
# tokens = tokens.npy after the document, globals = globals.npy, generated.txt byte for byte).
same_as_run() {
  /usr/bin/python3 - "$1" "$2" <<'PY'
import json, sys, numpy as np
sub, run = sys.argv[1], sys.argv[2]
r = json.load(open(sub + "/result.json"))
tokens = np.load(run + "/tokens.npy"); globs = np.load(run + "/globals.npy")
n = r["document_tokens"]
problems = []
if n + len(r["appended_tokens"]) != len(tokens): problems.append(f"{n}+{len(r['appended_tokens'])} tokens vs {len(tokens)}")
elif list(tokens[n:]) != r["appended_tokens"]: problems.append("appended tokens differ")
if list(globs) != r["globals"]: problems.append(f"globals differ ({len(r['globals'])} vs {len(globs)})")
if open(sub + "/generated.txt", "rb").read() != open(run + "/generated.txt", "rb").read():
    problems.append("generated.txt differs")
if problems:
    print("; ".join(problems)); sys.exit(1)
PY
}
