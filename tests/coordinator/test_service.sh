#!/usr/bin/env bash
# The control plane end to end over loopback: `longctx coordinator` + `mpirun -np 2 longctx
# worker` + `longctx submit`/`status`. Results through the coordinator equal `longctx run` under
# mpirun -np 2 on the same input (a document with a question, then further questions on the same
# document id without a second prefill); 20 concurrent clients with small documents, each result
# equal to `longctx run`; bad input refused with a one-line error while the service keeps serving
# (wrong/missing token, a worker group holding the clients' token, unreachable coordinator,
# oversize document, unknown document id, garbage bytes, an oversize frame, a truncated frame, an
# unknown protocol version).
# Usage: test_service.sh LONGCTX_BINARY
set -uo pipefail
BIN=${1:?usage: test_service.sh LONGCTX_BINARY}
T=$(mktemp -d)
source "$(dirname "$0")/lib_service.sh"
trap 'cleanup; rm -rf "$T"' EXIT
export LONGCTX_COMM_TIMEOUT_S=${LONGCTX_COMM_TIMEOUT_S:-60}
unset LONGCTX_TOKEN  # the token comes from the file only here

head -c 32 /dev/urandom | base64 >"$T/token"
chmod 600 "$T/token"
PORT=$(free_port)
start_coordinator "$PORT" "$T/coord.log" --max-document 1M --frame-timeout 1 || exit 1
start_workers 2 "$PORT" "$T/workers.log"
wait_workers "$PORT" 1 60 || { bad "worker group registers"; cat "$T/workers.log"; exit 1; }
ok "coordinator on port $PORT, worker group of 2 ranks registered"
S=(--coordinator "127.0.0.1:$PORT" --token-file "$T/token" --timeout 300 --progress off)

run_ref() {  # run_ref OUT ARGS...: `longctx run` on 2 ranks, the worker group's rank count
  local out=$1; shift
  timeout 300 mpirun "${MPIRUN_ARGS[@]}" -np 2 "$BIN" run --threads 1 --progress off --out "$out" \
    "$@" >"$out.log" 2>&1
}

# 1. A document with a question, then the same document id with other questions.
/usr/bin/python3 - "$T/doc.txt" <<'PY'
import random, sys
random.seed(7)
words = ["the", "model", "reads", "long", "documents.", "Globals", "carry", "context,", "and",
         "windows", "stay", "local!", "Why?"]
paras = [" ".join(random.choice(words) for _ in range(random.randint(40, 120))) for _ in range(60)]
open(sys.argv[1], "w").write("\n\n".join(paras) + "\n")
PY
if "$BIN" submit "${S[@]}" --input "$T/doc.txt" --doc-id book --query "What is kept?" \
    --generate 12 --out "$T/sub1" >"$T/sub1.log" 2>&1 &&
   run_ref "$T/run1" --input "$T/doc.txt" --query "What is kept?" --generate 12; then
  if diff=$(same_as_run "$T/sub1" "$T/run1"); then ok "document + question equals longctx run"
  else bad "document + question differs from longctx run: $diff"; fi
else
  bad "submit or run failed: $(tail -3 "$T/sub1.log") $(tail -3 "$T/run1.log" 2>/dev/null)"
fi
if "$BIN" submit "${S[@]}" --doc-id book --query "And what is global?" --generate 10 \
    --out "$T/sub2" >"$T/sub2.log" 2>&1 &&
   run_ref "$T/run2" --input "$T/doc.txt" --query "And what is global?" --generate 10; then
  if diff=$(same_as_run "$T/sub2" "$T/run2"); then ok "second question on the held document equals longctx run"
  else bad "second question differs: $diff"; fi
  grep -q '"prefilled": false' "$T/sub2/result.json" && ok "second question skipped the prefill" ||
    bad "second question prefilled again"
else
  bad "second question failed: $(tail -3 "$T/sub2.log")"
fi
if "$BIN" submit "${S[@]}" --doc-id book --generate 6 --out "$T/sub3" >"$T/sub3.log" 2>&1 &&
   run_ref "$T/run3" --input "$T/doc.txt" --generate 6; then
  if diff=$(same_as_run "$T/sub3" "$T/run3"); then ok "generation without a question equals longctx run"
  else bad "generation without a question differs: $diff"; fi
else
  bad "generate-only job failed: $(tail -3 "$T/sub3.log")"
fi

# 2. 20 concurrent clients, each with its own small document.
for i in $(seq 1 20); do
  /usr/bin/python3 -c "
import random, sys; random.seed($i)
print(' '.join(random.choice(['a','bc','def.','gh,','ij!','\n\n']) for _ in range(random.randint(50, 400))))
" >"$T/small$i.txt"
done
t0=$(date +%s.%N)
cpids=()
for i in $(seq 1 20); do
  "$BIN" submit "${S[@]}" --input "$T/small$i.txt" --query "Q$i?" --generate 4 \
    --out "$T/c$i" >"$T/c$i.log" 2>&1 &
  cpids+=($!)
done
cfail=0
for i in $(seq 1 20); do
  wait "${cpids[$((i - 1))]}" || { cfail=$((cfail + 1)); echo "client $i: $(tail -2 "$T/c$i.log")"; }
done
t1=$(date +%s.%N)
if ((cfail == 0)); then ok "20 concurrent clients finished ($(/usr/bin/python3 -c "print(f'{$t1-$t0:.1f}')") s)"
else bad "$cfail of 20 concurrent clients failed"; fi
wrong=0
for i in $(seq 1 20); do
  run_ref "$T/r$i" --input "$T/small$i.txt" --query "Q$i?" --generate 4 || { wrong=$((wrong + 1)); continue; }
  d=$(same_as_run "$T/c$i" "$T/r$i") || { wrong=$((wrong + 1)); echo "client $i: $d"; }
done
((wrong == 0)) && ok "all 20 concurrent results equal longctx run" || bad "$wrong of 20 results differ"

# 3. Bad input: one line on stderr, non-zero exit; the service keeps serving.
expect_error "submit: wrong token" submit --coordinator "127.0.0.1:$PORT" --token-file <(echo wrong) \
  --input "$T/doc.txt" --timeout 10
grep -q "authentication failed" "$T/stderr" || bad "wrong token: message does not say authentication failed"
expect_error "submit: no token" submit --coordinator "127.0.0.1:$PORT" --input "$T/doc.txt" --timeout 10
# A worker group holding the clients' token is refused (on main it registered, received other
# clients' documents and could forge their answers).
if timeout 60 mpirun "${MPIRUN_ARGS[@]}" -np 1 "$BIN" worker --coordinator "127.0.0.1:$PORT" \
    --worker-token-file "$T/token" --threads 1 >"$T/impostor.log" 2>&1; then
  bad "a worker group with the client token was accepted"
else
  grep -q "authentication failed" "$T/impostor.log" &&
    ok "a worker group with the client token is refused: $(grep -m1 -o 'authentication failed[^"]*' "$T/impostor.log")" ||
    bad "impostor worker group: $(tail -3 "$T/impostor.log")"
fi
"$BIN" status "${S[@]:0:6}" | grep -q "^workers: 1 group" && ok "still one worker group" ||
  bad "worker groups after the impostor: $("$BIN" status "${S[@]:0:6}" 2>&1 | head -1)"
# The coordinator refuses weak or shared credentials at startup, with one line.
echo short >"$T/short"
C=(coordinator --listen 127.0.0.1:0 --state-dir "$T/state-x")
expect_error "coordinator: short token" "${C[@]}" --token-file "$T/short" --worker-token-file "$T/worker-token"
grep -q "at least 16" "$T/stderr" || bad "short token: message does not give the minimum"
expect_error "coordinator: no worker token" "${C[@]}" --token-file "$T/token"
expect_error "coordinator: worker token = client token" "${C[@]}" --token-file "$T/token" \
  --worker-token-file "$T/token"
expect_error "status: nothing listens" status --coordinator 127.0.0.1:1 --token-file "$T/token" --timeout 5
head -c $((2 * 1024 * 1024)) /dev/zero | tr '\0' 'x' >"$T/big.txt"
expect_error "submit: document over --max-document" submit "${S[@]}" --input "$T/big.txt"
grep -q "exceeds the limit" "$T/stderr" || bad "oversize document: message does not name the limit"
expect_error "submit: unknown document id" submit "${S[@]}" --doc-id nosuchdoc --query hi
expect_error "submit: bad document id" submit "${S[@]}" --doc-id "../etc" --query hi
expect_error "submit: missing input" submit "${S[@]}" --input "$T/nope.txt"
expect_error "submit: bad address" submit --coordinator nohostport --token-file "$T/token" --input "$T/doc.txt"

# Raw bytes against the real service: each gets an error frame naming the problem, then close.
/usr/bin/python3 - "$PORT" "$(cat "$T/token")" >"$T/raw.log" 2>&1 <<'PY'
import socket, struct, sys, time
port, token = int(sys.argv[1]), sys.argv[2].encode()
def varint(n):
    out = b""
    while True:
        b = n & 0x7f; n >>= 7
        if n: out += bytes([b | 0x80])
        else: return out + bytes([b])
def field(num, wire, payload):  # protobuf field: tag + payload
    return varint(num << 3 | wire) + payload
def ld(num, data): return field(num, 2, varint(len(data)) + data)
def hello(version):  # Envelope{version, hello{protocol_version, role=CLIENT, token}}
    h = field(1, 0, varint(version)) + field(2, 0, varint(1)) + ld(3, token)
    return field(1, 0, varint(version)) + ld(10, h)
def frame(b): return struct.pack(">I", len(b)) + b
def exchange(data, want, wait=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=wait)
    s.sendall(data)
    got = b""
    end = time.time() + wait
    while time.time() < end:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk: break
        got += chunk
    s.close()
    ok = want.encode() in got
    print(("ok" if ok else "FAIL") + f": {want!r} in reply of {len(got)} bytes")
    return ok
results = [
    exchange(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "exceeds the limit"),          # garbage
    exchange(struct.pack(">I", 64 << 20), "exceeds the limit"),                    # oversize frame
    exchange(frame(b"\xff" * 12), "malformed message"),                            # not protobuf
    exchange(struct.pack(">I", 100) + b"abc", "partial-frame timeout"),            # truncated
    exchange(frame(hello(9)), "unsupported protocol version 9"),                   # unknown version
    exchange(frame(field(1, 0, varint(1)) + ld(13, ld(1, b"d"))), "must be a Hello"),  # no auth
]
sys.exit(0 if all(results) else 1)
PY
if [[ $? -eq 0 ]]; then ok "raw garbage/oversize/malformed/truncated/version/no-Hello refused with clear errors"
else bad "raw protocol refusals: $(cat "$T/raw.log")"; fi
# (the group keeps 4 documents, so "book" was dropped while the 20 clients ran: upload it again)
if "$BIN" submit "${S[@]}" --input "$T/doc.txt" --doc-id book --query "Still there?" --generate 3 \
    >"$T/after.log" 2>&1; then
  ok "the service still serves after every refusal"
else
  bad "the service stopped serving: $(tail -3 "$T/after.log")"
fi
"$BIN" status "${S[@]:0:6}" >"$T/status.log" 2>&1 && grep -q "^  worker g1 " "$T/status.log" &&
  ok "status lists the worker group and jobs" || bad "status: $(cat "$T/status.log")"
kill -0 "$COORD_PID" 2>/dev/null && ok "coordinator alive" || bad "coordinator died: $(tail "$T/coord.log")"

finish test_service
