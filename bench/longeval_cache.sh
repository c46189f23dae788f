#!/usr/bin/env bash
# Does the cache path keep the answer? (issue 14 item 5.) The same held-out documents answered
# by the same model with the KV cache resident, spilled as f32 and as int8 to each rank's host
# tier, and spilled as int8 to two `longctx store` processes (two replicas, no host tier): the
# accuracy of each, and per document whether the generated text equals the resident run's.
# Usage: bench/longeval_cache.sh path/to/longctx MODEL OUT [TOKENS=128K] [COUNT=10] [RANKS=4]
# Environment: TASKS (default "passkey multikey"), BUDGET (device tier per rank, default 4M).
# Writes OUT/<variant>-<task>.json (`longctx eval --json`) and OUT/cache.md.
set -euo pipefail
BIN="$1"; MODEL="$2"; OUT="$3"; TOKENS="${4:-128K}"; COUNT="${5:-10}"; RANKS="${6:-4}"
TASKS="${TASKS:-passkey multikey}"
BUDGET="${BUDGET:-4M}"
mkdir -p "$OUT"
W="$(mktemp -d)"
STORES=()
cleanup() { for p in "${STORES[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
MPIRUN=(mpirun -np "$RANKS" --oversubscribe --mca btl self,vader,tcp --mca btl_tcp_if_include lo
        --mca oob_tcp_if_include lo --mca pml ob1)
if [[ $(id -u) -eq 0 ]]; then MPIRUN+=(--allow-run-as-root); fi
THREADS=$(( $(nproc) / RANKS )); (( THREADS >= 1 )) || THREADS=1

for i in 1 2; do
  "$BIN" store --pool 2G --address-file "$W/s$i" --token-file "$W/store.token" \
    >"$W/store$i.log" 2>&1 &
  STORES+=($!)
done
for _ in $(seq 100); do [[ -s "$W/s1" && -s "$W/s2" ]] && break; sleep 0.1; done
[[ -s "$W/s1" && -s "$W/s2" ]] || { echo "longeval_cache: the stores did not start" >&2; exit 1; }

declare -A FLAGS=(
  [resident]=""
  [host-f32]="--kv-device-budget $BUDGET --kv-codec f32"
  [host-int8]="--kv-device-budget $BUDGET --kv-codec int8"
  [store-int8]="--kv-device-budget $BUDGET --kv-host-budget 0 --kv-codec int8 --kv-store $(cat "$W/s1"),$(cat "$W/s2") --kv-store-token-file $W/store.token --kv-replicas 2"
)
for task in $TASKS; do
  for v in resident host-f32 host-int8 store-int8; do
    # shellcheck disable=SC2086
    "${MPIRUN[@]}" "$BIN" eval --model "$MODEL" --task "$task" --tokens "$TOKENS" --count "$COUNT" \
      --data-seed 7 --threads "$THREADS" ${FLAGS[$v]} --json "$OUT/$v-$task.json" \
      >"$OUT/$v-$task.log" 2>&1
    tail -1 "$OUT/$v-$task.log"
  done
done

/usr/bin/python3 - "$OUT" "$TOKENS" "$RANKS" "$BUDGET" "$TASKS" <<'PYEOF'
import json, sys
out, tokens, ranks, budget, tasks = sys.argv[1:6]
lines = [f"Tokens {tokens}, {ranks} ranks, device tier {budget} per rank where spilled.", "",
         "| task | KV cache | accuracy | same text as resident | s/doc |", "|---|---|---:|---:|---:|"]
for task in tasks.split():
    base = json.load(open(f"{out}/resident-{task}.json"))
    for v in ["resident", "host-f32", "host-int8", "store-int8"]:
        r = json.load(open(f"{out}/{v}-{task}.json"))
        same = sum(a["generated"] == b["generated"] for a, b in zip(r["documents"], base["documents"]))
        lines.append(f"| {task} | {v} | {100 * r['accuracy']:.0f}% ({r['correct']}/{r['total']}) | "
                     f"{same}/{r['total']} | {r['seconds'] / r['total']:.1f} |")
open(f"{out}/cache.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PYEOF
