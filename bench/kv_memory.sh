#!/usr/bin/env bash
# Issue 5 item 6: a long document on P ranks with the KV cache spilled to `longctx store`
# processes (memory nodes) vs the same run with every block resident: peak RSS per rank, the
# KV bytes resident per rank, and the slowdown. Prints a markdown table.
# Usage: bench/kv_memory.sh path/to/longctx [TOKENS=1048576] [RANKS=4] [DEVICE_BUDGET=4M]
set -euo pipefail
BIN="$(realpath "$1")"
TOKENS="${2:-1048576}"
RANKS="${3:-4}"
BUDGET="${4:-4M}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
T="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
MPI=(mpirun --oversubscribe --allow-run-as-root --mca btl self,vader,tcp --mca btl_tcp_if_include lo
     --mca oob_tcp_if_include lo --mca pml ob1 -x UCX_TLS)
# tcp by default: over shared memory UCX maps the store's pool into this process, so its pages
# count in this process's RSS although they live in the store's memory (as on another node).
export UCX_TLS="${UCX_TLS:-tcp}"
"$HERE/../launch/make_document.sh" "$TOKENS" "$T/doc.txt"
for s in 1 2; do
  "$BIN" store --pool 1G --listen 127.0.0.1:0 --address-file "$T/s$s.addr" \
    --token-file "$T/store.token" >"$T/s$s.log" 2>&1 &
  PIDS+=($!)
done
for _ in $(seq 1 200); do [[ -s "$T/s1.addr" && -s "$T/s2.addr" ]] && break; sleep 0.05; done
STORES="$(cat "$T/s1.addr"),$(cat "$T/s2.addr")"
R=(run --progress off --input "$T/doc.txt" --query "Who pays for the goods of lot 7? " --generate 16
   --dump-hidden)
run() { local name="$1"; shift; "${MPI[@]}" -np "$RANKS" "$BIN" "${R[@]}" --out "$T/$name" "$@" >"$T/$name.log" 2>&1 || { echo "run $name failed:"; grep -v "^\[" "$T/$name.log" | head -5; exit 1; }; }
run resident
KEY=(--kv-store-token-file "$T/store.token")
run f32 --kv-device-budget "$BUDGET" --kv-host-budget 0 --kv-store "$STORES" "${KEY[@]}" --kv-codec f32
run int8 --kv-device-budget "$BUDGET" --kv-host-budget 0 --kv-store "$STORES" "${KEY[@]}" --kv-codec int8
/usr/bin/python3 - "$T" "$TOKENS" "$RANKS" "$BUDGET" <<'PY'
import json, sys, numpy as np
d, tokens, ranks, budget = sys.argv[1:]
rep = {k: json.load(open(f"{d}/{k}/report.json")) for k in ("resident", "f32", "int8")}
hid = {k: np.load(f"{d}/{k}/hidden.npy", mmap_mode="r") for k in rep}
n = rep["resident"]["tokens"] - rep["resident"]["query_tokens"] - rep["resident"]["generated_tokens"]
gen = {k: open(f"{d}/{k}/generated.txt", "rb").read() for k in rep}
MiB = 2**20
import os
print(f"{tokens} tokens, {ranks} ranks, device budget {budget}, remote tier: 2 `longctx store` processes, UCX_TLS={os.environ.get('UCX_TLS')}\n")
print("| run | peak RSS/rank (max) MiB | KV resident/rank (device peak) MiB | KV remote total MiB | prefill s | decode ms/token | answer vs resident |")
print("|---|---|---|---|---|---|---|")
base = rep["resident"]
for k, r in rep.items():
    rss = max(p["peak_rss_bytes"] for p in r["per_rank"]) / MiB
    dev = max(p["kv"]["device"]["peak_bytes"] for p in r["per_rank"]) / MiB
    rem = r["kv"]["remote"]["bytes"] / MiB
    a, b = hid["resident"][n:], hid[k][n:]
    err = float(np.abs(a - b).max() / np.abs(a).max())
    same = "bitwise equal" if np.array_equal(hid["resident"], hid[k]) else f"max rel err {err:.2e}"
    same += ", same tokens" if gen[k] == gen["resident"] else ", tokens differ"
    print(f"| {k} | {rss:.1f} | {dev:.2f} | {rem:.1f} | {r['seconds']['prefill']:.2f} | {r['decode_ms_per_token']} | {same} |")
for k in ("f32", "int8"):
    r = rep[k]
    rss_ratio = max(p["peak_rss_bytes"] for p in base["per_rank"]) / max(p["peak_rss_bytes"] for p in r["per_rank"])
    kv_ratio = max(p["kv"]["device"]["peak_bytes"] for p in base["per_rank"]) / max(p["kv"]["device"]["peak_bytes"] for p in r["per_rank"])
    slow_p = r["seconds"]["prefill"] / base["seconds"]["prefill"]
    slow_d = float(r["decode_ms_per_token"]) / float(base["decode_ms_per_token"])
    print(f"\n{k}: peak RSS ratio resident/spilled {rss_ratio:.2f}x; resident KV per rank ratio {kv_ratio:.1f}x; "
          f"slowdown prefill {slow_p:.2f}x, decode {slow_d:.2f}x; prefetch hits {r['kv']['prefetch_hits']}, "
          f"misses {r['kv']['prefetch_misses']}, max stall {r['kv']['max_stall_seconds']:.2f} s")
PY
