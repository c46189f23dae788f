#!/usr/bin/env bash
# A real single-node Slurm cluster in a temporary directory (munge with a fresh key, slurmctld
# and slurmd on free loopback ports, proctrack/linuxproc, task/none, select/cons_tres, 8 CPUs
# declared so 4 tasks fit on 2 cores): submits launch/slurm/longctx.sbatch with 4 tasks on a
# sample document, waits with a deadline, checks the hidden states equal `mpirun -np 4`, checks
# that a task killed by a signal fails the job visibly, runs launch/slurm/longctx-service.sbatch
# (coordinator + worker group; a submitted job equals `mpirun -np 2`), then stops every daemon by its pid file
# and removes the directory. Usage: test_slurm.sh path/to/longctx
set -uo pipefail
BIN="$(realpath "$1")"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
T="$(mktemp -d /tmp/longctx-slurm.XXXXXX)"
chmod 755 "$T"
# shellcheck source=../cli/lib.sh
source "$ROOT/tests/cli/lib.sh"

stop_all() {
  for pidf in "$T/slurmd.pid" "$T/slurmctld.pid" "$T/munged.pid"; do
    [[ -f "$pidf" ]] || continue
    local pid
    pid=$(cat "$pidf")
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  done
  rm -rf "$T"
}
trap stop_all EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HOST="$(hostname -s)"
CTLD_PORT=$(free_port)
SLURMD_PORT=$(free_port)
while [[ "$SLURMD_PORT" == "$CTLD_PORT" ]]; do SLURMD_PORT=$(free_port); done

# munge, with its own key, socket and files.
dd if=/dev/urandom of="$T/munge.key" bs=1024 count=1 status=none
chmod 400 "$T/munge.key"
munged --key-file="$T/munge.key" --socket="$T/munge.sock" --pid-file="$T/munged.pid" \
  --log-file="$T/munged.log" --seed-file="$T/munge.seed" -f
for _ in $(seq 50); do [[ -S "$T/munge.sock" ]] && break; sleep 0.1; done
if munge -S "$T/munge.sock" -n | unmunge -S "$T/munge.sock" >/dev/null 2>&1; then ok "munge"; else
  bad "munge did not start: $(cat "$T/munged.log" 2>/dev/null)"; echo "$passed passed, $failed failed"; exit 1; fi

mkdir -p "$T/state" "$T/spool"
cat >"$T/slurm.conf" <<CONF
ClusterName=longctx-test
SlurmctldHost=$HOST
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$T/munge.sock
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/slurmctld.log
SlurmdLogFile=$T/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=pmix
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=$HOST CPUs=8 RealMemory=16000 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$T/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
up=0
for _ in $(seq 120); do
  if sinfo -h -o %t 2>/dev/null | grep -qE '^idle'; then up=1; break; fi
  sleep 0.5
done
if [[ $up -eq 1 ]]; then ok "slurmctld + slurmd up, node idle"; else
  bad "cluster did not come up: $(sinfo 2>&1 | tail -2) $(tail -3 "$T/slurmctld.log" "$T/slurmd.log" 2>/dev/null)"
  echo "$passed passed, $failed failed"; exit 1; fi

# The job: the sbatch template, 4 tasks, on a sample document; the same with mpirun.
"$ROOT/launch/make_document.sh" 20000 "$T/doc.txt"
cd "$T"
if timeout 300 sbatch --wait --ntasks=4 --ntasks-per-node=4 --cpus-per-task=1 --output="$T/job.out" \
    --export=ALL,LONGCTX="$BIN" "$ROOT/launch/slurm/longctx.sbatch" \
    --input "$T/doc.txt" --out "$T/slurm_run" --dump-hidden --query "Who pays?" --generate 8 \
    >"$T/sbatch.txt" 2>&1 && [[ -f "$T/slurm_run/hidden.npy" ]]; then
  ok "sbatch longctx.sbatch (4 tasks): $(grep -E '^run:' "$T/job.out")"
else
  bad "sbatch job failed: $(cat "$T/sbatch.txt") $(tail -5 "$T/job.out" 2>/dev/null)"
fi
grep -q '"launcher": "srun"' "$T/slurm_run/report.json" 2>/dev/null && grep -q '"ranks": 4' "$T/slurm_run/report.json" \
  && ok "4 ranks under srun --mpi=pmix" || bad "report.json: $(head -c 400 "$T/slurm_run/report.json" 2>/dev/null)"
timeout 300 mpirun -np 4 --oversubscribe --allow-run-as-root --mca btl self,vader,tcp \
  --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo --mca pml ob1 \
  "$BIN" run --input "$T/doc.txt" --out "$T/mpirun_run" --dump-hidden --query "Who pays?" \
  --generate 8 --threads 1 --progress off >/dev/null 2>&1
if cmp -s "$T/slurm_run/hidden.npy" "$T/mpirun_run/hidden.npy" && \
   cmp -s "$T/slurm_run/tokens.npy" "$T/mpirun_run/tokens.npy"; then
  ok "Slurm result equals mpirun (bitwise, same shards)"
else
  bad "Slurm and mpirun results differ"
fi

# A task killed by Slurm's signal fails the job visibly.
start=$(date +%s)
timeout 120 sbatch --wait --ntasks=3 --cpus-per-task=1 --output="$T/dead.out" \
  --export=ALL,LONGCTX="$BIN",LONGCTX_TEST_KILL_RANK=1 "$ROOT/launch/slurm/longctx.sbatch" \
  --input "$T/doc.txt" --out "$T/dead_run" >"$T/dead.txt" 2>&1
rc=$?
if [[ $rc -ne 0 && ! -f "$T/dead_run/report.json" ]]; then
  ok "killed task fails the job: sbatch rc=$rc after $(( $(date +%s) - start ))s: $(grep -iE 'error|killed|signal' "$T/dead.out" | head -1)"
else
  bad "killed task: sbatch rc=$rc $(cat "$T/dead.txt") $(tail -3 "$T/dead.out")"
fi
# The service variant: the coordinator on the first node, a worker group over 2 tasks and a
# `longctx store` step lending memory, which the workers spill their KV to (1 MiB device budget,
# no host tier); a client's document + question through it equals `mpirun -np 2 longctx run`
# (the f32 codec is bitwise invisible); scancel ends it.
head -c 32 /dev/urandom | base64 >"$T/svc.token"
SVC_ADDR="127.0.0.1:$(free_port)"
svc_job=$(sbatch --parsable --ntasks=2 --cpus-per-task=1 --output="$T/svc.out" \
  --export=ALL,LONGCTX="$BIN",LONGCTX_TOKEN_FILE="$T/svc.token",LONGCTX_LISTEN="$SVC_ADDR",LONGCTX_STATE_DIR="$T/svc",LONGCTX_STORE_POOL=64M,LONGCTX_STORE_HOST=127.0.0.1,LONGCTX_LOG=info \
  "$ROOT/launch/slurm/longctx-service.sbatch" --global-max 16 --kv-device-budget 1M \
  --kv-host-budget 0 2>"$T/svc_sbatch.txt")
svc_up=0
for _ in $(seq 240); do
  if "$BIN" status --coordinator "$SVC_ADDR" --token-file "$T/svc.token" --timeout 5 2>/dev/null |
      grep -q "^workers: 1 group"; then svc_up=1; break; fi
  sleep 0.5
done
if [[ $svc_up -eq 1 ]]; then ok "longctx-service.sbatch: coordinator up, worker group of 2 tasks registered"
else bad "service job $svc_job did not come up: $(cat "$T/svc_sbatch.txt") $(tail -5 "$T/svc.out" "$T/svc/coordinator.log" 2>/dev/null)"; fi
timeout 300 "$BIN" submit --coordinator "$SVC_ADDR" --token-file "$T/svc.token" --progress off \
  --input "$T/doc.txt" --query "Who pays?" --generate 8 --out "$T/svc_sub" >"$T/svc_sub.txt" 2>&1
timeout 300 mpirun -np 2 --oversubscribe --allow-run-as-root --mca btl self,vader,tcp \
  --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo --mca pml ob1 \
  "$BIN" run --input "$T/doc.txt" --out "$T/mpirun2_run" --query "Who pays?" --generate 8 \
  --global-max 16 --threads 1 --progress off >/dev/null 2>&1
if /usr/bin/python3 - "$T/svc_sub" "$T/mpirun2_run" <<'PY'
import json, sys, numpy as np
r = json.load(open(sys.argv[1] + "/result.json"))
tokens = np.load(sys.argv[2] + "/tokens.npy")
n = r["document_tokens"]
same = (list(tokens[n:]) == r["appended_tokens"] and
        list(np.load(sys.argv[2] + "/globals.npy")) == r["globals"] and
        open(sys.argv[1] + "/generated.txt", "rb").read() == open(sys.argv[2] + "/generated.txt", "rb").read())
sys.exit(0 if same else 1)
PY
then ok "job through the Slurm service (KV spilled to its store step) equals mpirun -np 2 longctx run"
else bad "service job result differs or failed: $(cat "$T/svc_sub.txt")"; fi
scancel "$svc_job" 2>/dev/null
svc_gone=0
for _ in $(seq 120); do
  [[ -z "$(squeue -h -j "$svc_job" 2>/dev/null)" ]] && { svc_gone=1; break; }
  sleep 0.5
done
[[ $svc_gone -eq 1 ]] && ok "scancel ends the service job" || bad "service job $svc_job still queued/running"
# The workers' KV went to the store step (one store for the one node), holding blocks at the end.
[[ $(grep -c 'listening on' "$T/svc/stores.log") -eq 1 ]] \
  && grep -q 'clients, [1-9][0-9]* of [0-9]* bytes in use' "$T/svc/stores.log" \
  && ok "the service's store step held the workers' spilled KV blocks" \
  || bad "no KV block reached the store step: $(grep -v "^srun" "$T/svc/stores.log" 2>/dev/null | tail -4)"

finish
