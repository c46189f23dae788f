#!/usr/bin/env bash
# Builds the whole project with AddressSanitizer + UndefinedBehaviorSanitizer
# (-DLONGCTX_SANITIZE=address,undefined, g++) in its own build folder and runs the `unit` label
# there. Any ASan report (overflow, use after free, leak) or UBSan report fails the test: UBSan
# halts on its first error. Opt-in, because the sanitized build is a second full build (see
# docs/security.md, "Fuzzing and sanitizers", for its cost): skipped (exit 77) unless
# LONGCTX_CI_SANITIZE=1. Usage: run_sanitized.sh SOURCE_DIR BUILD_DIR [extra ctest args...]
# (e.g. -R to run a subset; SANITIZE_TARGETS="t1 t2" builds only those targets).
set -uo pipefail
src=${1:?usage: run_sanitized.sh SOURCE_DIR BUILD_DIR [ctest args...]}
build=${2:?usage: run_sanitized.sh SOURCE_DIR BUILD_DIR [ctest args...]}
shift 2
if [[ ${LONGCTX_CI_SANITIZE:-0} != 1 ]]; then
  echo "run_sanitized: skipped (set LONGCTX_CI_SANITIZE=1 to build and run the sanitized unit tests)"
  exit 77
fi
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
start=$(date +%s)
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DLONGCTX_SANITIZE=address,undefined -DLONGCTX_CUDA=OFF -DLONGCTX_PYTHON=OFF \
  "${launcher[@]}" >"$build.configure.log" 2>&1 || {
  tail -n 20 "$build.configure.log"; echo "run_sanitized: FAIL: configure"; exit 1; }
# SANITIZE_TARGETS: build only these (e.g. the gtest executables) instead of everything.
read -ra targets <<<"${SANITIZE_TARGETS:-all}"
timeout 5400 cmake --build "$build" -j "${JOBS:-$(nproc)}" --target "${targets[@]}" \
  >"$build.build.log" 2>&1 || {
  tail -n 30 "$build.build.log"; echo "run_sanitized: FAIL: build"; exit 1; }
echo "run_sanitized: built in $(($(date +%s) - start)) s"
# detect_leaks: LeakSanitizer at exit. halt_on_error: a UBSan report aborts the test.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export LSAN_OPTIONS=suppressions=$src/tests/sanitize/lsan.supp
cd "$build" || exit 1
start=$(date +%s)
ctest -L unit --output-on-failure -j "${JOBS:-$(nproc)}" --timeout 900 "$@"
rc=$?
echo "run_sanitized: ctest -L unit exited $rc after $(($(date +%s) - start)) s"
exit $rc
