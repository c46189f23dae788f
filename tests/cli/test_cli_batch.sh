#!/usr/bin/env bash
# Several documents per `longctx run` job (--input repeated, --inputs LIST, --doc-groups G),
# under mpirun on 2 and 4 ranks:
#   - each document's outputs (hidden.npy, generated.txt, tokens.npy, globals.npy) are bitwise
#     those of a one-document run on P/G ranks (the ranks of its group), for G = 1 and G = 2,
#     whatever the order of the inputs;
#   - G = 1 and G = 2 differ only by the shard plan (P vs P/G ranks): the same generated text,
#     hidden states within 1e-5 (relative to the largest);
#   - report.json has a `documents` array (path, tokens, prefill_seconds, answer) and the batch
#     totals; a spilled run (f32 codec) equals the resident one, each rank under its budget;
#   - bad input (a missing file among the inputs, G not dividing P) is one error line, a
#     non-zero exit, and no output written;
#   - `longctx bench batch` runs and finds the answers equal (no timing is checked).
# Usage: test_cli_batch.sh path/to/longctx
set -uo pipefail
BIN="$1"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
PY=/usr/bin/python3
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"
MPI=(mpirun --oversubscribe --allow-run-as-root --mca btl self,vader,tcp --mca btl_tcp_if_include lo
     --mca oob_tcp_if_include lo --mca pml ob1)

for i in 0 1 2; do "$HERE/../../launch/make_document.sh" $((6000 + 3000 * i)) "$T/d$i.txt" >/dev/null; done
R=(run --progress off --threads 1 --global-max 32 --query "Who pays? " --generate 6 --dump-hidden)
run() {  # run NP OUT ARGS...
  local np="$1" out="$2"; shift 2
  timeout 300 "${MPI[@]}" -np "$np" "$BIN" "${R[@]}" --out "$out" "$@" >"$out.log" 2>&1
}
# same_doc BATCH_DIR INDEX SINGLE_DIR: every output file of the document bitwise equal
same_doc() {
  local f
  for f in hidden.npy generated.txt tokens.npy globals.npy; do
    cmp -s "$1/doc-00$2/$f" "$3/$f" || { echo "$f differs"; return 1; }
  done
}

# One-document runs: the references.
for np in 1 2; do
  for i in 0 1 2; do
    run "$np" "$T/s${np}_$i" --input "$T/d$i.txt" || bad "np $np doc $i: $(tail -3 "$T/s${np}_$i.log")"
  done
done

# G = 1 on 2 ranks: every document through both ranks, one after another.
run 2 "$T/g1" --input "$T/d0.txt" --input "$T/d1.txt" --input "$T/d2.txt" \
  && ok "np 2 G=1 batch ran" || bad "np 2 G=1: $(tail -3 "$T/g1.log")"
for i in 0 1 2; do
  msg=$(same_doc "$T/g1" "$i" "$T/s2_$i") && ok "np 2 G=1 doc $i bitwise equals its 2-rank run" \
    || bad "np 2 G=1 doc $i: $msg"
done
# G = 2 on 2 ranks, the inputs reversed: each document on one rank.
run 2 "$T/g2" --input "$T/d2.txt" --input "$T/d1.txt" --input "$T/d0.txt" --doc-groups 2 \
  && ok "np 2 G=2 batch ran" || bad "np 2 G=2: $(tail -3 "$T/g2.log")"
for i in 0 1 2; do
  msg=$(same_doc "$T/g2" "$((2 - i))" "$T/s1_$i") \
    && ok "np 2 G=2 (reversed) doc $i bitwise equals its 1-rank run" || bad "np 2 G=2 doc $i: $msg"
done
# G = 2 on 4 ranks (groups of 2), another order, from a list file.
printf '# documents\n%s\n\n  %s  \n%s\n' "$T/d1.txt" "$T/d2.txt" "$T/d0.txt" >"$T/list.txt"
run 4 "$T/g2p4" --inputs "$T/list.txt" --doc-groups 2 \
  && ok "np 4 G=2 batch (--inputs) ran" || bad "np 4 G=2: $(tail -3 "$T/g2p4.log")"
for i in 0 1 2; do
  msg=$(same_doc "$T/g2p4" "$(((i + 2) % 3))" "$T/s2_$i") \
    && ok "np 4 G=2 doc $i bitwise equals its 2-rank run" || bad "np 4 G=2 doc $i: $msg"
done

# G = 1 against G = 2 (2 ranks): only the shard plan differs.
"$PY" - "$T/g1" "$T/g2" <<'PYEOF' && ok "G=1 vs G=2: same answers, hidden within 1e-5" || bad "G=1 vs G=2"
import sys, numpy as np
g1, g2 = sys.argv[1], sys.argv[2]
for i in range(3):
    a = np.load(f"{g1}/doc-00{i}/hidden.npy"); b = np.load(f"{g2}/doc-00{2 - i}/hidden.npy")
    err = np.abs(a - b).max() / np.abs(a).max()
    print(f"doc {i}: hidden relative error {err:.3g}")
    assert a.shape == b.shape and err <= 1e-5, err
    assert open(f"{g1}/doc-00{i}/generated.txt", "rb").read() == \
        open(f"{g2}/doc-00{2 - i}/generated.txt", "rb").read()
PYEOF

# report.json: the documents and the batch totals.
"$PY" - "$T/g2p4/report.json" "$T" <<'PYEOF' && ok "report.json: documents and batch totals" || bad "report.json"
import json, sys
r = json.load(open(sys.argv[1])); T = sys.argv[2]
docs = r["documents"]
assert r["ranks"] == 4 and r["doc_groups"] == 2, r
assert [d["path"] for d in docs] == [f"{T}/d1.txt", f"{T}/d2.txt", f"{T}/d0.txt"], docs
assert [d["tokens"] for d in docs] == [9000, 12000, 6000], docs
for d in docs:
    assert d["ranks"] == 2 and d["group"] in (0, 1) and d["prefill_seconds"] > 0, d
    gen = open(d["dir"] + "/generated.txt", "rb").read().decode("utf-8", "replace")
    assert d["answer"] == gen and d["generated_tokens"] == 6, (d["answer"], gen)
# longest first to the least-loaded group: 12000 -> 0, 9000 -> 1, 6000 -> 1
assert [d["group"] for d in docs] == [1, 0, 1], docs
b = r["batch"]
assert b["documents"] == 3 and b["tokens"] == 27000 == r["tokens"], b
assert abs(b["tokens_per_s"] - b["tokens"] / b["seconds"]) <= 0.05 * b["tokens_per_s"] + 1, b
assert len(b["group_seconds"]) == 2 and max(b["group_seconds"]) <= b["seconds"] + 1e-6, b
assert len(r["per_rank"]) == 4, r["per_rank"]
PYEOF

# The budgets are per rank and shared by the rank's documents: spilled (f32) equals resident.
run 2 "$T/g2spill" --input "$T/d2.txt" --input "$T/d1.txt" --input "$T/d0.txt" --doc-groups 2 \
  --kv-device-budget 1M --kv-codec f32 && ok "np 2 G=2 spilled batch ran" \
  || bad "np 2 G=2 spilled: $(tail -3 "$T/g2spill.log")"
"$PY" - "$T/g2" "$T/g2spill" $((1 << 20)) <<'PYEOF' && ok "spilled G=2 batch equals resident, under the budget" || bad "spilled batch"
import json, sys, filecmp
a, b, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(3):
    for f in ("hidden.npy", "generated.txt"):
        assert filecmp.cmp(f"{a}/doc-00{i}/{f}", f"{b}/doc-00{i}/{f}", shallow=False), (i, f)
r = json.load(open(b + "/report.json"))
assert r["kv"]["budgets"]["device"] == budget and r["kv"]["demotions"] > 0, r["kv"]
for p in r["per_rank"]:
    assert p["kv"]["device"]["peak_bytes"] <= budget, p
PYEOF

# One --input keeps the one-document report (no `documents`).
"$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); assert 'documents' not in r and r['ranks'] == 2" \
  "$T/s2_0/report.json" && ok "one --input: the one-document report" || bad "one --input report"

# Bad input: one error line, non-zero, nothing written (an existing output left as it was).
mkdir -p "$T/keep" && echo previous >"$T/keep/report.json"
bad_run() {  # bad_run NAME NP ARGS...
  local name="$1" np="$2"; shift 2
  timeout 120 "${MPI[@]}" -np "$np" "$BIN" "${R[@]}" "$@" >"$T/bad.log" 2>&1
  local rc=$? lines
  lines=$(grep -c "^longctx run: error" "$T/bad.log")
  if [[ $rc -ne 0 && $lines -eq 1 && ! -e "$T/none" ]] && [[ "$(cat "$T/keep/report.json")" == previous ]] \
     && [[ -z "$(ls "$T/keep" | grep -v report.json)" ]]; then
    ok "$name: rc=$rc, $(grep "^longctx run: error" "$T/bad.log")"
  else
    bad "$name: rc=$rc, $lines error lines: $(head -c 600 "$T/bad.log")"
  fi
}
bad_run "missing file among the inputs" 2 --input "$T/d0.txt" --input "$T/missing.txt" --out "$T/none"
bad_run "missing file, existing output" 2 --input "$T/d0.txt" --input "$T/missing.txt" --out "$T/keep"
bad_run "G does not divide P" 3 --input "$T/d0.txt" --input "$T/d1.txt" --doc-groups 2 --out "$T/keep"
bad_run "missing --inputs list" 2 --inputs "$T/nolist.txt" --out "$T/none"
expect_error "--doc-groups 2 on one process" run --progress off --input "$T/d0.txt" --doc-groups 2 --out "$T/none"
expect_error "--doc-groups 0" run --progress off --input "$T/d0.txt" --input "$T/d1.txt" --doc-groups 0 --out "$T/none"
expect_error "--input-ids with a batch" run --progress off --input "$T/d0.txt" --inputs "$T/list.txt" --input-ids "$T/x.npy" --out "$T/none"
[[ ! -e "$T/none" ]] && ok "no output directory after the bad runs" || bad "$T/none was created"

# `longctx bench batch` end to end on small documents: both modes ran, the answers agree.
timeout 300 "$BIN" bench batch --docs 2 --tokens 3000 --ranks 2 --doc-groups 1,2 --generate 4 \
  --json "$T/bench.json" >"$T/bench.txt" 2>&1
"$PY" - "$T/bench.json" <<'PYEOF' && ok "bench batch: 3 modes, ratios, answers equal" || bad "bench batch: $(tail -5 "$T/bench.txt")"
import json, sys
b = json.load(open(sys.argv[1]))
modes = b["modes"]
assert [m["jobs"] for m in modes] == [2, 1, 1], modes
for m in modes:
    assert m["answers_equal"] and m["job_tokens_per_s"] > 0 and m["ratio_engine"] > 0, m
PYEOF

finish test_cli_batch
