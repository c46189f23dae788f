#!/usr/bin/env bash
# A full disk under `longctx run --out` (issue 17 item 6): one error line naming the file and
# "No space left on device", a non-zero exit, no partial report.json/generated.txt, no temporary
# file, and the report of an earlier run in the same directory untouched. The disk is a 1 MiB
# tmpfs mounted for the test (needs root; exit 77, a visible skip, otherwise).
# Usage: test_cli_full_disk.sh path/to/longctx
set -uo pipefail
BIN="$1"
T="$(mktemp -d)"
M="$T/disk"
mkdir -p "$M"
cleanup() { umount -l "$M" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if ! mount -t tmpfs -o size=1m tmpfs "$M" 2>"$T/mount.err"; then
  echo "SKIP: cannot mount a 1 MiB tmpfs (needs root): $(cat "$T/mount.err")"
  exit 77
fi
printf 'First clause: the buyer pays. Second, the seller ships!\n\nNotes; see above? Yes.' >"$T/doc.txt"
"$BIN" mkmodel --out "$T/m" --preset tiny --seed 3 >/dev/null || { echo "FAIL: mkmodel"; exit 1; }
R=(run --progress off --threads 1 --model "$T/m" --input "$T/doc.txt" --generate 4)

# An earlier run fits; keep its files to compare.
"$BIN" "${R[@]}" --out "$M/out" >/dev/null 2>&1 && [[ -f "$M/out/report.json" ]] \
  && ok "a run fits on the 1 MiB disk" || bad "the first run failed"
cp -a "$M/out" "$T/before"

# Fill the disk to the last byte.
dd if=/dev/zero of="$M/fill" bs=64k 2>/dev/null
[[ "$(df --output=avail -B1 "$M" | tail -1 | tr -d ' ')" == 0 ]] && ok "the disk is full" \
  || bad "the disk is not full: $(df -B1 "$M" | tail -1)"

expect_error "run --out into a full disk" "${R[@]}" --out "$M/out"
grep -q 'No space left on device' "$T/stderr" && ok "the error says the disk is full" \
  || bad "the error does not say the disk is full: $(cat "$T/stderr")"
for f in report.json generated.txt tokens.npy globals.npy; do
  if [[ -e "$T/before/$f" ]]; then
    cmp -s "$T/before/$f" "$M/out/$f" && ok "$f of the earlier run untouched" || bad "$f changed or torn"
  fi
done
[[ -z "$(find "$M" -name '*.tmp.*')" ]] && ok "no temporary file left" \
  || bad "temporary files left: $(find "$M" -name '*.tmp.*')"

# A fresh directory on the full disk: no partial report or generated text at all.
expect_error "run --out into a fresh directory on a full disk" "${R[@]}" --out "$M/fresh"
[[ ! -e "$M/fresh/report.json" && ! -e "$M/fresh/generated.txt" ]] \
  && ok "no report.json or generated.txt" || bad "partial output: $(ls -la "$M/fresh")"
[[ -z "$(find "$M" -name '*.tmp.*')" ]] && ok "still no temporary file" || bad "temporary files left"

# The disk running out part-way: k free pages (4 KiB each) for k = 0..6, so the run stops at a
# different file each time. Every file present is whole (the same bytes as the earlier run;
# report.json, whose timings differ, parses) and no temporary file is left.
mid=0
for k in 0 1 2 3 4 5 6; do
  rm -f "$M/fill"
  dd if=/dev/zero of="$M/fill" bs=64k 2>/dev/null
  truncate -s "-$((k * 4096))" "$M/fill"
  "$BIN" "${R[@]}" --out "$M/k$k" >"$T/stdout" 2>"$T/stderr"
  rc=$?
  lines=$(wc -l <"$T/stderr")
  whole=1
  for f in generated.txt tokens.npy globals.npy; do
    [[ ! -e "$M/k$k/$f" ]] || cmp -s "$T/before/$f" "$M/k$k/$f" || whole=0
  done
  [[ ! -e "$M/k$k/report.json" ]] || /usr/bin/python3 -c 'import json,sys; json.load(open(sys.argv[1]))' \
    "$M/k$k/report.json" 2>/dev/null || whole=0
  [[ -z "$(find "$M" -name '*.tmp.*')" ]] || whole=0
  if [[ $rc -eq 0 ]]; then
    [[ $whole -eq 1 && -f "$M/k$k/report.json" ]] && ok "$k free pages: the run fits, every file whole" \
      || bad "$k free pages: rc 0 but files missing or torn: $(ls "$M/k$k")"
  else
    [[ $rc -lt 128 && $lines -eq 1 && $whole -eq 1 ]] \
      && ok "$k free pages: rc=$rc, one error line, files present whole ($(ls "$M/k$k" | tr '\n' ' '))" \
      || bad "$k free pages: rc=$rc, $lines lines, whole=$whole: $(head -c 400 "$T/stderr")"
    [[ -n "$(ls "$M/k$k")" ]] && mid=$((mid + 1))
  fi
  rm -rf "$M/k$k"
done
[[ $mid -gt 0 ]] && ok "$mid runs failed after writing some of their files" \
  || bad "no run failed part-way (the sweep did not reach the middle of a run)"

finish
