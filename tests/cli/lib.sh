# Shared by the CLI test scripts (source it after setting BIN, the longctx binary, and T, a
# temporary directory): pass/fail counting, the verdict (`finish`, last) and the one-line-error
# check.
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok: $1"; }
bad() { failed=$((failed + 1)); echo "FAIL: $1"; }
# finish [NAME]: the last line, "N passed, M failed", and the script's status: success only when
# no check failed AND at least one ran (a script that silently skipped every check must fail).
finish() {
  echo "${1:+$1: }$passed passed, $failed failed"
  ((failed == 0 && passed > 0))
}

# expect_error NAME ARGS... : `$BIN ARGS` exits non-zero (not by a signal) with exactly one line
# on stderr, starting "longctx".
expect_error() {
  local name="$1"; shift
  "$BIN" "$@" >"$T/stdout" 2>"$T/stderr"
  local rc=$?
  local lines
  lines=$(wc -l <"$T/stderr")
  if [[ $rc -ne 0 && $rc -lt 128 && $lines -eq 1 ]] && grep -q '^longctx' "$T/stderr"; then
    ok "$name: rc=$rc: $(cat "$T/stderr")"
  else
    bad "$name: rc=$rc, $lines stderr lines: $(head -c 800 "$T/stderr")"
  fi
}
