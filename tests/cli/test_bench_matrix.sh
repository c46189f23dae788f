#!/usr/bin/env bash
# `longctx bench matrix` end to end on a tiny matrix (512 and 2K tokens, 1 and 2 ranks under
# mpirun): the files exist, matrix.json parses and holds every planned cell, the exponents are
# printed, dense against itself deviates by exactly 0 and hybrid/window against dense by > 0, the
# generated tokens are compared, the plots are real PNGs; a dense run over the time limit's
# estimate is skipped with its reason written down; bad flags are one error line.
# Usage: test_bench_matrix.sh path/to/longctx
set -uo pipefail
BIN="$1"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
PY=/usr/bin/python3
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export LONGCTX_COMM_TIMEOUT_S="${LONGCTX_COMM_TIMEOUT_S:-60}"

M=(bench matrix --lengths 512,2K --ranks 1,2 --generate 4 --time-limit 120 --out "$T/m")
if timeout 600 "$BIN" "${M[@]}" >"$T/stdout" 2>"$T/stderr"; then
  ok "tiny matrix ran"
else
  bad "tiny matrix: rc=$?: $(tail -3 "$T/stderr") $(tail -3 "$T/stdout")"
fi
for f in matrix.json matrix.md memory_vs_length.png throughput_vs_length.png \
         prefill_time_vs_length.png decode_latency_vs_length.png kv_bytes_per_tier.png; do
  [[ -s "$T/m/$f" ]] && ok "$f written" || bad "$f missing"
done
grep -q "^  exponent: understand dense 1 rank(s), 512..2K (2 lengths), prefill time n^" "$T/stdout" \
  && grep -q "^  exponent: understand hybrid-union 2 rank(s)" "$T/stdout" \
  && ok "exponents printed" || bad "exponents not printed: $(grep exponent "$T/stdout" | head -3)"

"$PY" - "$T/m" <<'PYEOF' && ok "matrix.json: cells, deviations, fits, headlines" || bad "matrix.json checks"
import json, sys
d = sys.argv[1]
m = json.load(open(d + "/matrix.json"))
runs = m["runs"]
kinds = ["dense", "window", "hybrid-union", "hybrid-weighted"]
kv = m["options"]["kv"]
# every (length, ranks, task, kind) cell, plus the KV variants of hybrid-union generate
expected = 2 * 2 * (4 + 4 + len(kv) - 1)
assert len(runs) == expected, (len(runs), expected)
for r in runs:
    assert r["status"] == "ok", (r["tokens"], r["ranks"], r["kind"], r["task"], r["reason"])
    assert r["tokens_per_second"] > 0 and r["peak_rss_bytes_max_rank"] > 0
    assert r["report"]["ranks"] == r["ranks"]
def cell(n, p, kind, task, kv="resident"):
    [r] = [r for r in runs if (r["tokens"], r["ranks"], r["kind"], r["task"], r["kv"]) == (n, p, kind, task, kv)]
    return r
for n in (512, 2048):
    for p in (1, 2):
        assert cell(n, p, "dense", "understand")["rel_error_vs_dense"] == 0.0
        for k in ("window", "hybrid-union", "hybrid-weighted"):
            e = cell(n, p, k, "understand")["rel_error_vs_dense"]
            assert e is not None and 0.0 < e < 10.0, (n, p, k, e)
        assert cell(n, p, "dense", "generate")["tokens_agree_with_dense"] is True
        for k in kinds:
            g = cell(n, p, k, "generate")
            assert len(g["generated_tokens"]) == 4 and g["tokens_agree_with_dense"] in (True, False)
            assert g["decode_ms_per_token"] > 0
        # 2 ranks run the same model: dense on 2 ranks equals dense on 1 up to fp32 rounding
        assert cell(n, 2, "dense", "generate")["generated_tokens"] == cell(n, 1, "dense", "generate")["generated_tokens"]
        # the dense window covers everything: the run saw all n + question + 4 tokens
        w = cell(n, p, "dense", "generate")["report"]["windows"][0]
        assert w >= n + len(m["options"]["query"]) + 4, w
fits = {(f["task"], f["kind"], f["kv"], f["ranks"]): f for f in m["fits"]}
for k in kinds:
    for p in (1, 2):
        f = fits[("understand", k, "resident", p)]
        assert f["lengths"] == [512, 2048] and f["prefill_seconds"]["points"] == 2
assert [h["claimed"] for h in m["headlines"]] == [0.63, 2.8, 3.2]
for h in m["headlines"]:
    assert h["verdict"], h
md = open(d + "/matrix.md").read()
for s in ("## Headlines", "## Growth exponents", "63% less memory", "2.8x", "3.2x", "| 2K | 2 | hybrid-union |"):
    assert s in md, s
for f in m["plots"]:
    assert open(d + "/" + f, "rb").read(8) == b"\x89PNG\r\n\x1a\n", f
PYEOF

# A dense run whose n^2 estimate exceeds the time limit is skipped, and the report says why.
if timeout 300 "$BIN" bench matrix --lengths 1K,16K --ranks 1 --tasks understand \
     --kinds dense,hybrid-union --dense-limit 0.01 --no-plots --out "$T/s" >"$T/s.out" 2>&1; then
  "$PY" - "$T/s" <<'PYEOF' && ok "dense skipped by its n^2 estimate, with the reason" || bad "dense skip: $(tail -5 "$T/s.out")"
import json, sys
m = json.load(open(sys.argv[1] + "/matrix.json"))
[d] = [r for r in m["runs"] if r["kind"] == "dense" and r["tokens"] == 16384]
assert d["status"] == "skipped" and "estimated" in d["reason"] and "time limit" in d["reason"], d
assert d["estimate"]["prefill_seconds"] > 0.01
[h] = [r for r in m["runs"] if r["kind"] == "hybrid-union" and r["tokens"] == 16384]
assert h["status"] == "ok" and h["rel_error_vs_dense"] is None
assert "skipped" in open(sys.argv[1] + "/matrix.md").read()
PYEOF
else
  bad "skip matrix failed: $(tail -3 "$T/s.out")"
fi

# The dense budget: the first dense run calibrates, the next one's estimate is over the budget.
if timeout 300 "$BIN" bench matrix --lengths 512,1K --ranks 1 --tasks understand --kinds dense \
     --dense-budget 0.000001 --no-plots --out "$T/b" >"$T/b.out" 2>&1; then
  "$PY" - "$T/b" <<'PYEOF' && ok "dense skipped by the dense budget, with the reason" || bad "dense budget: $(tail -5 "$T/b.out")"
import json, sys
m = json.load(open(sys.argv[1] + "/matrix.json"))
[a, b] = m["runs"]
assert a["status"] == "ok" and a["tokens"] == 512, a
assert b["status"] == "skipped" and "dense budget" in b["reason"], b
PYEOF
else
  bad "budget matrix failed: $(tail -3 "$T/b.out")"
fi

# Bad flags: one line, non-zero.
expect_error "bad length" bench matrix --lengths 2X --out "$T/x"
expect_error "zero length" bench matrix --lengths 0 --out "$T/x"
expect_error "bad rank count" bench matrix --ranks 0 --out "$T/x"
expect_error "bad kind" bench matrix --kinds sparse --out "$T/x"
expect_error "bad task" bench matrix --tasks summarize --out "$T/x"
expect_error "bad kv variant" bench matrix --kv paged --out "$T/x"
expect_error "bad time limit" bench matrix --time-limit 0 --out "$T/x"
expect_error "bad dense limit" bench matrix --dense-limit -1 --out "$T/x"
expect_error "bad dense budget" bench matrix --dense-budget -1 --out "$T/x"
expect_error "unknown flag" bench matrix --bogus
expect_error "bad generate" bench matrix --generate 0 --out "$T/x"

finish
