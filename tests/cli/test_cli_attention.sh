#!/usr/bin/env bash
# `longctx attention` end to end: a sample run checked against the float64 reference, output
# shapes, and every kind of bad input giving a one-line error and a non-zero exit without
# touching an existing output. Usage: test_cli_attention.sh path/to/longctx
set -uo pipefail
BIN="$1"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The .npy header of a file as text, e.g. "{'descr': '<f4', 'fortran_order': False, 'shape': (300, 4, 32), }"
npy_header() { head -c 128 "$1" | tail -c +11 | tr -d '\0' | head -1; }

# Writes an int64 .npy vector from its arguments (no python needed).
write_i64_npy() {
  local out="$1"; shift
  local n=$#
  local dict="{'descr': '<i8', 'fortran_order': False, 'shape': (${n},), }"
  local pad=$((64 - (10 + ${#dict} + 1) % 64))
  { printf '\x93NUMPY\x01\x00'
    local hlen=$((${#dict} + pad + 1))
    printf "\\x$(printf %02x $((hlen & 255)))\\x$(printf %02x $((hlen >> 8)))"
    printf '%s' "$dict"; printf '%*s' "$pad" ''; printf '\n'
    for x in "$@"; do
      for ((b = 0; b < 8; b++)); do printf "\\x$(printf %02x $(((x >> (8 * b)) & 255)))"; done
    done
  } >"$out"
}

"$BIN" --help >/dev/null && ok "--help" || bad "--help"
"$BIN" attention --help | grep -q -- "--bidirectional" && ok "attention --help" || bad "attention --help"

# A real run, checked against the reference, for each fusion and direction.
"$BIN" attention --make-sample "$T/s" --n 300 --heads 4 --kv-heads 2 --head-dim 32 --seed 5 >/dev/null \
  && ok "make-sample" || bad "make-sample"
for extra in "" "--bidirectional" "--fusion weighted:0.7" "--bidirectional --fusion weighted:0.25 --scale 0.2"; do
  # shellcheck disable=SC2086
  if "$BIN" attention --q "$T/s/q.npy" --k "$T/s/k.npy" --v "$T/s/v.npy" --globals "$T/s/globals.npy" \
      --window 40 $extra --out "$T/o.npy" --lse "$T/l.npy" --threads 2 --check >"$T/run.txt" 2>&1; then
    ok "run [$extra]: $(tail -1 "$T/run.txt")"
  else
    bad "run [$extra]: $(cat "$T/run.txt")"
  fi
done
[[ "$(npy_header "$T/o.npy")" == *"'descr': '<f4'"*"'shape': (300, 4, 32)"* ]] && ok "O shape" \
  || bad "O header: $(npy_header "$T/o.npy")"
[[ "$(npy_header "$T/l.npy")" == *"'shape': (300, 4)"* ]] && ok "L shape" || bad "L header: $(npy_header "$T/l.npy")"
for isa in generic avx2 avx512; do
  if "$BIN" attention --q "$T/s/q.npy" --k "$T/s/k.npy" --v "$T/s/v.npy" --window 7 --isa $isa \
      --out "$T/o_$isa.npy" --check >"$T/isa.txt" 2>&1; then
    ok "isa $isa"
  elif grep -q "not supported" "$T/isa.txt"; then
    echo "skip: isa $isa not supported on this CPU"
  else
    bad "isa $isa: $(cat "$T/isa.txt")"
  fi
done
# int32 globals from a hand-written file are accepted like int64 ones.
write_i64_npy "$T/g64.npy" 0 1 150 299
"$BIN" attention --q "$T/s/q.npy" --k "$T/s/k.npy" --v "$T/s/v.npy" --globals "$T/g64.npy" --window 9 \
  --out "$T/o2.npy" --check >/dev/null 2>&1 && ok "hand-written int64 globals" || bad "hand-written globals"

# Bad input: one line, non-zero, and the existing output left alone.
cp "$T/o.npy" "$T/keep.npy"
A=(attention --q "$T/s/q.npy" --k "$T/s/k.npy" --v "$T/s/v.npy")
write_i64_npy "$T/unsorted.npy" 5 3
write_i64_npy "$T/dup.npy" 3 3
write_i64_npy "$T/oob.npy" 0 300
write_i64_npy "$T/neg.npy" -1 4
expect_error "unsorted globals" "${A[@]}" --globals "$T/unsorted.npy" --window 8 --out "$T/keep.npy"
expect_error "duplicate globals" "${A[@]}" --globals "$T/dup.npy" --window 8 --out "$T/keep.npy"
expect_error "out-of-range globals" "${A[@]}" --globals "$T/oob.npy" --window 8 --out "$T/keep.npy"
expect_error "negative globals" "${A[@]}" --globals "$T/neg.npy" --window 8 --out "$T/keep.npy"
LONGCTX_ISA=avx9000 expect_error "unknown LONGCTX_ISA" "${A[@]}" --window 8 --out "$T/keep.npy"
expect_error "globals not 1-D" "${A[@]}" --globals "$T/s/q.npy" --window 8 --out "$T/keep.npy"
expect_error "window 0" "${A[@]}" --window 0 --out "$T/keep.npy"
expect_error "window not a number" "${A[@]}" --window abc --out "$T/keep.npy"
expect_error "bad fusion" "${A[@]}" --window 8 --fusion weighted:1.5 --out "$T/keep.npy"
expect_error "unknown fusion" "${A[@]}" --window 8 --fusion mean --out "$T/keep.npy"
expect_error "negative scale" "${A[@]}" --window 8 --scale -1 --out "$T/keep.npy"
expect_error "unknown flag" "${A[@]}" --window 8 --frobnicate --out "$T/keep.npy"
expect_error "bad isa" "${A[@]}" --window 8 --isa sse9 --out "$T/keep.npy"
expect_error "missing --out" "${A[@]}" --window 8
expect_error "missing file" attention --q "$T/nope.npy" --k "$T/s/k.npy" --v "$T/s/v.npy" --out "$T/keep.npy"
"$BIN" attention --make-sample "$T/d48" --n 300 --heads 4 --kv-heads 2 --head-dim 48 >/dev/null
expect_error "head_dim mismatch" attention --q "$T/s/q.npy" --k "$T/d48/k.npy" --v "$T/d48/v.npy" --out "$T/keep.npy"
"$BIN" attention --make-sample "$T/h3" --n 300 --heads 3 --kv-heads 3 --head-dim 32 >/dev/null
expect_error "heads not a multiple of kv heads" attention --q "$T/s/q.npy" --k "$T/h3/k.npy" --v "$T/h3/v.npy" --out "$T/keep.npy"
"$BIN" attention --make-sample "$T/n200" --n 200 --heads 4 --kv-heads 2 --head-dim 32 >/dev/null
expect_error "token count mismatch" attention --q "$T/s/q.npy" --k "$T/n200/k.npy" --v "$T/n200/v.npy" --out "$T/keep.npy"
expect_error "k/v shape mismatch" attention --q "$T/s/q.npy" --k "$T/s/k.npy" --v "$T/n200/v.npy" --out "$T/keep.npy"
expect_error "q not 3-D" attention --q "$T/g64.npy" --k "$T/s/k.npy" --v "$T/s/v.npy" --out "$T/keep.npy"
expect_error "1-D int64 array as q" attention --q "$T/s/globals.npy" --k "$T/s/k.npy" --v "$T/s/v.npy" --out "$T/keep.npy"
head -c 2000 "$T/s/q.npy" >"$T/trunc.npy"
expect_error "truncated q" attention --q "$T/trunc.npy" --k "$T/s/k.npy" --v "$T/s/v.npy" --out "$T/keep.npy"
printf 'not a numpy file at all' >"$T/garbage.npy"
expect_error "garbage q" attention --q "$T/garbage.npy" --k "$T/s/k.npy" --v "$T/s/v.npy" --out "$T/keep.npy"
: >"$T/empty.npy"
expect_error "empty q" attention --q "$T/empty.npy" --k "$T/s/k.npy" --v "$T/s/v.npy" --out "$T/keep.npy"
# A NaN planted in k (first element after the 128-byte header) is refused, not propagated.
cp "$T/s/k.npy" "$T/nan.npy"
printf '\x00\x00\xc0\x7f' | dd of="$T/nan.npy" bs=1 seek=128 conv=notrunc status=none
expect_error "NaN in k" attention --q "$T/s/q.npy" --k "$T/nan.npy" --v "$T/s/v.npy" --out "$T/keep.npy"
expect_error "unwritable output" "${A[@]}" --window 8 --out "$T/no/such/dir/o.npy"
cmp -s "$T/o.npy" "$T/keep.npy" && ok "existing output untouched by failed runs" || bad "output clobbered"
[[ -z "$(find "$T" -name '*.tmp.*')" ]] && ok "no temporary files left" || bad "temporary files left"

finish
