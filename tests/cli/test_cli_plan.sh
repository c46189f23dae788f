#!/usr/bin/env bash
# `longctx plan` (the capacity model) and `longctx bench profile|plan`: the predicted bytes per
# layer equal what `longctx run` on 2 and 3 ranks reports (the count is the algorithm's, not a
# fit), the memory and time predictions move the right way with N and P, a profile measured here
# round-trips, and bad input is one error line.
# Usage: test_cli_plan.sh path/to/longctx
set -uo pipefail
BIN="$1"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
PY=/usr/bin/python3
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MPI=(mpirun --oversubscribe --allow-run-as-root --mca btl self,vader,tcp --mca btl_tcp_if_include lo
     --mca oob_tcp_if_include lo --mca pml ob1)

# A profile measured here, small: 1-rank runs at 4K and 16K tokens (and 8K with two threads).
"$BIN" bench profile --model builtin:tiny --tokens 4096,8192,16384 --out "$T/p.json" >"$T/profile.txt" 2>&1 \
  && "$PY" -c "import json,sys; p=json.load(open(sys.argv[1])); assert p['prefill']['row_core_seconds'] > 0 and p['memory']['row_bytes'] > 0, p" "$T/p.json" \
  && ok "bench profile writes a fitted profile" || bad "bench profile: $(tail -3 "$T/profile.txt")"

plan() { "$BIN" plan --profile "$T/p.json" --model builtin:tiny --json "$@"; }
for P in 1 2 4; do plan --tokens 1048576 --ranks $P >"$T/p$P.json" || bad "plan -np $P"; done
plan --tokens 4194304 --ranks 4 >"$T/big.json" || bad "plan 4M"
"$PY" - "$T" <<'PYEOF' && ok "plan: fields; memory and prefill fall with ranks, grow with tokens" || bad "plan monotonicity"
import json, sys
t = sys.argv[1]
p = {P: json.load(open(f"{t}/p{P}.json")) for P in (1, 2, 4)}
big = json.load(open(f"{t}/big.json"))
for k in ("prefill_seconds", "decode_ms_per_token", "peak_rss_bytes", "comm_bytes_per_layer"):
    assert k in p[1], k
assert p[1]["comm_bytes_per_layer"] == 0 < p[2]["comm_bytes_per_layer"]
assert p[1]["peak_rss_bytes"] > p[2]["peak_rss_bytes"] > p[4]["peak_rss_bytes"]
assert big["peak_rss_bytes"] > p[4]["peak_rss_bytes"] and big["prefill_seconds"] > p[4]["prefill_seconds"]
PYEOF

# The bytes per layer: predicted == reported by real runs (2 and 3 ranks, 64K tokens).
"$BIN" mkmodel --out "$T/m" --preset tiny >/dev/null 2>&1
"$PY" -c "print(('The buyer pays. The seller ships!\n\n' * 2000)[:65536], end='')" >"$T/doc.txt"
for P in 2 3; do
  "${MPI[@]}" -np $P "$BIN" run --model "$T/m" --input "$T/doc.txt" --out "$T/r$P" --threads 1 \
    --progress off >/dev/null 2>&1 || bad "run -np $P"
  "$BIN" plan --profile "$T/p.json" --model "$T/m" --tokens 65536 --ranks $P --json >"$T/q$P.json"
  "$PY" - "$T/r$P/report.json" "$T/q$P.json" <<'PYEOF' && ok "np $P: predicted bytes per layer == reported" || bad "np $P: bytes per layer"
import json, sys
r, q = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print("reported", r["comm_bytes_per_layer"], "predicted", q["comm_bytes_per_layer"], "globals", r["globals"], q["globals"])
assert r["globals"] == q["globals"]
assert abs(r["comm_bytes_per_layer"] - q["comm_bytes_per_layer"]) <= 0.02 * r["comm_bytes_per_layer"]
PYEOF
done

# bench plan: measured runs next to the predictions (small, 1 and 2 ranks).
"$BIN" bench plan --profile "$T/p.json" --ranks 1,2 --tokens 8192 --json "$T/v.json" >"$T/v.txt" 2>&1 \
  && "$PY" -c "import json,sys; v=json.load(open(sys.argv[1])); assert len(v['runs']) == 2 and all(r['measured']['prefill_seconds'] > 0 for r in v['runs'])" "$T/v.json" \
  && ok "bench plan: measured and predicted rows" || bad "bench plan: $(tail -3 "$T/v.txt")"

# Bad input.
expect_error "no profile" plan --tokens 100
expect_error "missing profile" plan --profile "$T/none.json" --tokens 100
printf '{"model": 1' >"$T/bad.json"
expect_error "malformed profile" plan --profile "$T/bad.json" --tokens 100
expect_error "zero ranks" plan --profile "$T/p.json" --tokens 100 --ranks 0
expect_error "bad codec" plan --profile "$T/p.json" --kv-codec f8
expect_error "bad efficiency" plan --profile "$T/p.json" --flops 1e12 --efficiency 2
expect_error "bad budget" plan --profile "$T/p.json" --kv-device-budget lots
expect_error "missing model" plan --profile "$T/p.json" --model "$T/nomodel"
expect_error "profile: one length" bench profile --tokens 4096 --out "$T/x.json"

finish
