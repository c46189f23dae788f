#!/usr/bin/env bash
# The control plane over TLS with real processes on loopback, with a CA made here by the openssl
# CLI: `longctx coordinator --tls-cert/--tls-key/--tls-ca`, `mpirun -np 2 longctx worker` with its
# own certificate (mutual TLS), `longctx submit --tls-ca`: the result equals `longctx run`; a
# plaintext client, a worker group without a certificate and a coordinator listening beyond
# loopback without TLS are each refused with one line.
# Usage: test_service_tls.sh LONGCTX_BINARY
set -uo pipefail
BIN=${1:?usage: test_service_tls.sh LONGCTX_BINARY}
T=$(mktemp -d)
source "$(dirname "$0")/lib_service.sh"
trap 'cleanup; [[ -n ${KEEP:-} ]] || rm -rf "$T"' EXIT
export LONGCTX_COMM_TIMEOUT_S=${LONGCTX_COMM_TIMEOUT_S:-60}
unset LONGCTX_TOKEN LONGCTX_WORKER_TOKEN
command -v openssl >/dev/null || { echo "FAIL: openssl not found (launch/install-deps.sh)"; exit 1; }

head -c 32 /dev/urandom | base64 >"$T/token"
# The PKI: a CA, the coordinator's certificate for 127.0.0.1, a worker group's certificate.
P="$T/pki"
mkdir -p "$P"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
{
  openssl req -x509 "${ec[@]}" -keyout "$P/ca.key" -out "$P/ca.pem" -days 2 -subj /CN=test-ca &&
  echo "subjectAltName=IP:127.0.0.1" >"$P/server.ext" &&
  openssl req "${ec[@]}" -keyout "$P/server.key" -out "$P/server.csr" -subj /CN=coordinator &&
  openssl x509 -req -in "$P/server.csr" -CA "$P/ca.pem" -CAkey "$P/ca.key" -CAcreateserial \
    -days 2 -extfile "$P/server.ext" -out "$P/server.pem" &&
  openssl req "${ec[@]}" -keyout "$P/worker.key" -out "$P/worker.csr" -subj /CN=worker &&
  openssl x509 -req -in "$P/worker.csr" -CA "$P/ca.pem" -CAkey "$P/ca.key" -CAcreateserial \
    -days 2 -out "$P/worker.pem"
} >"$T/openssl.log" 2>&1 || { echo "FAIL: openssl: $(tail -3 "$T/openssl.log")"; exit 1; }
ok "a CA and certificates made with the openssl CLI"

PORT=$(free_port)
start_coordinator "$PORT" "$T/coord.log" --tls-cert "$P/server.pem" --tls-key "$P/server.key" \
  --tls-ca "$P/ca.pem" || exit 1
grep -q "(TLS;" "$T/coord.log" && ok "coordinator listens with TLS" || bad "coordinator: $(cat "$T/coord.log")"
S=(--coordinator "127.0.0.1:$PORT" --token-file "$T/token" --tls-ca "$P/ca.pem" --timeout 300
   --progress off)
worker_token
mpirun "${MPIRUN_ARGS[@]}" -np 2 "$BIN" worker --coordinator "127.0.0.1:$PORT" \
  --worker-token-file "$T/worker-token" --tls-ca "$P/ca.pem" --tls-cert "$P/worker.pem" \
  --tls-key "$P/worker.key" --threads 1 >"$T/workers.log" 2>&1 &
pids+=($!)
registered=0
for _ in $(seq 300); do
  if "$BIN" status "${S[@]:0:6}" --timeout 5 2>/dev/null | grep -q "^workers: 1 group"; then
    registered=1; break
  fi
  sleep 0.2
done
((registered)) && ok "worker group registered over mutual TLS" ||
  { bad "worker group did not register: $(tail -5 "$T/workers.log")"; exit 1; }

/usr/bin/python3 -c "
import random; random.seed(5)
print(' '.join(random.choice(['alpha','beta.','gamma,','delta!','\n\n']) for _ in range(2000)))
" >"$T/doc.txt"
if "$BIN" submit "${S[@]}" --input "$T/doc.txt" --doc-id tdoc --query "Over TLS?" --generate 8 \
    --out "$T/sub" >"$T/sub.log" 2>&1 &&
   timeout 300 mpirun "${MPIRUN_ARGS[@]}" -np 2 "$BIN" run --threads 1 --progress off \
    --out "$T/ref" --input "$T/doc.txt" --query "Over TLS?" --generate 8 >"$T/ref.log" 2>&1; then
  d=$(same_as_run "$T/sub" "$T/ref") && ok "a job over TLS equals longctx run" ||
    bad "a job over TLS differs from longctx run: $d"
else
  bad "submit over TLS: $(tail -3 "$T/sub.log") $(tail -3 "$T/ref.log")"
fi

expect_error "submit: plaintext client against a TLS coordinator" submit \
  --coordinator "127.0.0.1:$PORT" --token-file "$T/token" --doc-id tdoc --query hi --timeout 10
if timeout 60 "$BIN" worker --coordinator "127.0.0.1:$PORT" --worker-token-file "$T/worker-token" \
    --tls-ca "$P/ca.pem" --threads 1 >"$T/nocert.log" 2>&1; then
  bad "a worker group without a certificate was accepted"
else
  grep -q "must present a TLS certificate" "$T/nocert.log" &&
    ok "a worker group without a certificate is refused and exits" ||
    bad "worker without a certificate: $(tail -3 "$T/nocert.log")"
fi
expect_error "coordinator: plaintext beyond loopback" coordinator --listen 0.0.0.0:0 \
  --token-file "$T/token" --worker-token-file "$T/worker-token" --state-dir "$T/state2"
grep -q "needs TLS" "$T/stderr" || bad "plaintext beyond loopback: $(cat "$T/stderr")"
kill -0 "$COORD_PID" 2>/dev/null && ok "coordinator alive" || bad "coordinator died: $(tail "$T/coord.log")"

finish test_service_tls
