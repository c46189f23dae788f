#!/usr/bin/env bash
# `longctx run --trace` on 3 ranks (docs/observability.md):
#   - the merged file is JSON (python's json) with one pid per rank, named, and every expected
#     span on every rank; spans are well-formed (ph X, ts >= 0, dur >= 0) and nest on each
#     thread; one qkv_projection per layer and one decode_step per appended token on each rank;
#     the KV cache's thread shows demotions under a small device budget;
#   - a run with --trace gives bitwise the same hidden states and generated text as without;
#   - a --trace path in a missing directory is a one-line error before any work;
#   - the copy-paste example of docs/observability.md runs as written (2 ranks) and
#     bench/plot_trace.py renders its trace.
# Usage: test_cli_trace.sh path/to/longctx
set -uo pipefail
BIN="$(readlink -f "$1")"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
PY=/usr/bin/python3
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"
MPI=(mpirun --oversubscribe --allow-run-as-root --mca btl self,vader,tcp --mca btl_tcp_if_include lo
     --mca oob_tcp_if_include lo --mca pml ob1)

"$ROOT/launch/make_document.sh" 30000 "$T/doc.txt"
R=(run --progress off --threads 1 --input "$T/doc.txt" --global-max 32 --query "Who pays? "
   --generate 6 --dump-hidden --kv-block-tokens 64 --kv-device-budget 1M)
run() {  # run NP OUT ARGS...
  local np="$1" out="$2"; shift 2
  timeout 300 "${MPI[@]}" -np "$np" "$BIN" "${R[@]}" --out "$out" "$@" >"$out.log" 2>&1
}

run 3 "$T/plain" && ok "np 3: run without --trace" || bad "np 3: plain run: $(tail -3 "$T/plain.log")"
run 3 "$T/traced" --trace "$T/trace.json" \
  && ok "np 3: run with --trace" || bad "np 3: traced run: $(tail -3 "$T/traced.log")"
grep -q "wrote the trace of 3 rank(s)" "$T/traced.log" && ok "the run says where the trace is" \
  || bad "no trace line: $(tail -3 "$T/traced.log")"
cmp -s "$T/plain/hidden.npy" "$T/traced/hidden.npy" \
  && cmp -s "$T/plain/generated.txt" "$T/traced/generated.txt" \
  && cmp -s "$T/plain/tokens.npy" "$T/traced/tokens.npy" \
  && ok "--trace leaves hidden states, tokens and generated text bitwise unchanged" \
  || bad "--trace changed the outputs"

"$PY" - "$T/trace.json" "$T/traced/report.json" 3 <<'PYEOF' && ok "trace: ranks, spans, nesting" || bad "trace contents"
import json, sys
from collections import defaultdict
doc = json.load(open(sys.argv[1]))
report = json.load(open(sys.argv[2]))
P = int(sys.argv[3])
ev = doc["traceEvents"]
assert doc["otherData"]["ranks"] == P, doc["otherData"]
procs = {e["pid"]: e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "process_name"}
assert sorted(procs) == list(range(P)), procs
for r, name in procs.items():
    assert name.startswith("rank %d (" % r), name
threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in ev
           if e["ph"] == "M" and e["name"] == "thread_name"}
spans = [e for e in ev if e["ph"] != "M"]
assert spans, "no spans"
names = defaultdict(lambda: defaultdict(int))
by_thread = defaultdict(list)
for e in spans:
    assert e["ph"] == "X", e
    assert e["pid"] in procs, e
    assert (e["pid"], e["tid"]) in threads, e
    assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0, e
    assert isinstance(e["dur"], (int, float)) and e["dur"] >= 0, e
    names[e["pid"]][e["name"]] += 1
    by_thread[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"], e["name"]))
every_rank = ["load", "prefill", "answer", "write_outputs", "embed", "qkv_projection",
              "attention", "halo_post", "global_exchange", "attn_interior", "halo_wait",
              "attn_edges", "attn_global_partial", "partials_exchange", "merge", "kv_append",
              "out_proj_mlp", "decode_step", "decode_qkv", "decode_query_exchange",
              "decode_attention", "decode_partials_exchange"]
L = report["layers"]
appended = report["query_tokens"] + report["generated_tokens"]
for r in range(P):
    missing = [n for n in every_rank if names[r][n] == 0]
    assert not missing, ("rank", r, "misses", missing)
    assert names[r]["qkv_projection"] == L, (r, names[r]["qkv_projection"], L)
    assert names[r]["attention"] == L and names[r]["halo_wait"] == L, names[r]
    assert names[r]["decode_step"] == appended, (r, names[r]["decode_step"], appended)
    assert names[r]["decode_attention"] == appended * L, names[r]
    assert names[r]["prefill"] == 1 and names[r]["answer"] == 1, names[r]
assert names[P - 1]["decode_merge_mlp"] == appended * L, names[P - 1]
assert all(names[r]["decode_merge_mlp"] == 0 for r in range(P - 1))
# The background thread: demotions under the 1M budget, on a thread named kv-cache.
demotes = [(k, n) for k, v in by_thread.items() for (_, _, n) in v if n == "kv_demote"]
assert demotes, "no kv_demote span"
assert all(threads[k] == "kv-cache" for k, _ in demotes), set(threads[k] for k, _ in demotes)
assert sum(names[r]["kv_load"] for r in range(P)) > 0, "no kv_load span"
# Nesting: on each thread, spans either nest or are disjoint (1 ns rounding allowed).
eps = 0.002
for key, ss in by_thread.items():
    ss.sort(key=lambda x: (x[0], -x[1]))
    stack = []
    for s, e, n in ss:
        while stack and stack[-1][1] <= s + eps:
            stack.pop()
        if stack:
            assert e <= stack[-1][1] + eps, ("overlap", key, stack[-1], (s, e, n))
        stack.append((s, e, n))
# Inside one layer, the attention span contains its exchanges: check one on rank 0.
main0 = by_thread[next(k for k in by_thread if k[0] == 0 and threads[k] == "main")]
att = [x for x in main0 if x[2] == "attention"][0]
inner = [x for x in main0 if att[0] <= x[0] and x[1] <= att[1] + eps and x[2] != "attention"]
assert {"halo_post", "global_exchange", "halo_wait", "merge"} <= {x[2] for x in inner}, inner
PYEOF

# A trace path whose directory does not exist: one line, before any work.
expect_error "--trace in a missing directory" run --progress off --input "$T/doc.txt" \
  --trace "$T/no/such/dir/t.json" --out "$T/x"

# The copy-paste example of docs/observability.md, run as written from a directory that looks
# like the repository root (launch/, bench/), with longctx, python3 and mpirun (with this
# machine's flags) on PATH.
mkdir -p "$T/ex/bin"
ln -s "$ROOT/launch" "$T/ex/launch"
ln -s "$ROOT/bench" "$T/ex/bench"
ln -s "$BIN" "$T/ex/bin/longctx"
ln -s "$PY" "$T/ex/bin/python3"
printf '#!/bin/sh\nexec %s %s "$@"\n' "$(command -v mpirun)" "${MPI[*]:1}" >"$T/ex/bin/mpirun"
chmod +x "$T/ex/bin/mpirun"
sed -n '/<!-- trace-example:begin -->/,/<!-- trace-example:end -->/p' "$ROOT/docs/observability.md" \
  | sed '/^<!--/d; /^```/d' >"$T/ex/example.sh"
if [[ $(wc -l <"$T/ex/example.sh") -ge 3 ]]; then
  (cd "$T/ex" && PATH="$T/ex/bin:$PATH" timeout 300 bash -euo pipefail example.sh >"$T/ex.log" 2>&1) \
    && [[ -s "$T/ex/trace.json" && -s "$T/ex/trace.png" && -s "$T/ex/run-out/generated.txt" ]] \
    && grep -q "prefill" "$T/ex.log" \
    && ok "docs/observability.md example runs and plots" || bad "docs example: $(tail -5 "$T/ex.log")"
else
  bad "docs/observability.md: the example block is missing"
fi

# `longctx worker --trace`: a 2-rank worker group serves one job through a coordinator; on
# SIGTERM to its ranks it stops and writes the merged trace of the job.
pids=()
trap 'for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; rm -rf "$T"' EXIT
echo "trace-test-token-0123456789" >"$T/token"
echo "trace-test-worker-token-9876543210" >"$T/worker-token"   # the worker groups' own
chmod 600 "$T/token" "$T/worker-token"
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" coordinator --listen "127.0.0.1:$PORT" --token-file "$T/token" \
  --worker-token-file "$T/worker-token" --state-dir "$T/state" >"$T/coord.log" 2>&1 &
pids+=($!)
"${MPI[@]}" -np 2 "$BIN" worker --coordinator "127.0.0.1:$PORT" \
  --worker-token-file "$T/worker-token" --threads 1 --trace "$T/worker_trace.json" >"$T/workers.log" 2>&1 &
mpirun_pid=$!
pids+=("$mpirun_pid")
ranks=()
for _ in $(seq 300); do  # up to 30 s for both ranks to announce their pids
  mapfile -t ranks < <(sed -n 's/^longctx worker: rank [0-9]*\/2 (pid \([0-9]*\)).*/\1/p' "$T/workers.log")
  [[ ${#ranks[@]} -eq 2 ]] && break
  sleep 0.1
done
"$ROOT/launch/make_document.sh" 5000 "$T/small.txt"
timeout 120 "$BIN" submit --coordinator "127.0.0.1:$PORT" --token-file "$T/token" \
  --input "$T/small.txt" --query "Who pays? " --generate 3 --out "$T/sub" >"$T/submit.log" 2>&1 \
  && ok "a job through a traced worker group" || bad "submit: $(tail -3 "$T/submit.log")"
[[ ${#ranks[@]} -eq 2 ]] && kill -TERM "${ranks[@]}"
for _ in $(seq 300); do kill -0 "$mpirun_pid" 2>/dev/null || break; sleep 0.1; done
"$PY" - "$T/worker_trace.json" <<'PYEOF' && ok "worker --trace: both ranks' job at shutdown" || bad "worker trace: $(tail -3 "$T/workers.log")"
import json, sys
from collections import Counter
d = json.load(open(sys.argv[1]))
n = Counter((e["pid"], e["name"]) for e in d["traceEvents"] if e["ph"] == "X")
for r in (0, 1):
    for name in ("job", "qkv_projection", "global_exchange", "merge", "decode_step"):
        assert n[(r, name)] >= 1, (r, name, n)
PYEOF
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
wait 2>/dev/null

finish
