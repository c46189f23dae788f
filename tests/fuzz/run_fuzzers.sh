#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ in their own clang build (-DLONGCTX_FUZZ=ON, ASan +
# UBSan) and runs each one for a bounded time over a copy of its seed corpus fuzz/corpus/<name>
# (so the seeds, and the regression inputs among them, always run first). Passes when every
# target ran its whole time without a crash, leak, timeout or sanitizer report.
# Usage: run_fuzzers.sh SOURCE_DIR BUILD_DIR [SECONDS_PER_TARGET] [TARGET...]   (default 10 s, all)
# BUILD_DIR is kept between runs (incremental; ccache when installed). LONGCTX_FUZZ_KEEP=DIR keeps
# each run's log and grown corpus under DIR (the long run of bench/results/fuzz.md).
set -uo pipefail
src=${1:?usage: run_fuzzers.sh SOURCE_DIR BUILD_DIR [SECONDS] [TARGET...]}
build=${2:?usage: run_fuzzers.sh SOURCE_DIR BUILD_DIR [SECONDS] [TARGET...]}
seconds=${3:-10}
shift $(($# < 3 ? $# : 3))
targets=("$@")
((${#targets[@]})) || targets=(fuzz_npy fuzz_safetensors fuzz_config fuzz_tokenizer fuzz_frame
  fuzz_store_hello)
command -v clang++ >/dev/null || { echo "run_fuzzers: FAIL: clang++ not found (launch/install-deps.sh)"; exit 1; }

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
start=$(date +%s)
if [[ ! -f $build/build.ninja ]]; then
  cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang -DLONGCTX_FUZZ=ON \
    -DLONGCTX_SANITIZE=address,undefined -DLONGCTX_BUILD_TESTS=OFF -DLONGCTX_PYTHON=OFF \
    -DLONGCTX_CUDA=OFF "${launcher[@]}" >"$build.configure.log" 2>&1 || {
    tail -n 20 "$build.configure.log"; echo "run_fuzzers: FAIL: configure"; exit 1; }
fi
timeout 1800 cmake --build "$build" -j "${JOBS:-2}" --target "${targets[@]}" >"$build.build.log" 2>&1 || {
  tail -n 30 "$build.build.log"; echo "run_fuzzers: FAIL: build"; exit 1; }
echo "run_fuzzers: built ${#targets[@]} targets in $(($(date +%s) - start)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
keep=${LONGCTX_FUZZ_KEEP:-}
failed=0
for t in "${targets[@]}"; do
  out=$work/$t
  [[ -n $keep ]] && out=$keep/$t
  mkdir -p "$out/corpus"
  cp "$src/fuzz/corpus/$t/"* "$out/corpus/" 2>/dev/null
  # -error_exitcode: any crash/leak/UB report; -timeout: one input running > 10 s is a hang.
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
    timeout $((seconds + 120)) "$build/fuzz/$t" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -max_len=8192 -print_final_stats=1 -artifact_prefix="$out/" \
    "$out/corpus" >"$out/log" 2>&1
  rc=$?
  runs=$(grep -oE "Done [0-9]+ runs" "$out/log" | grep -oE "[0-9]+")
  cov=$(grep -oE "cov: [0-9]+ ft: [0-9]+" "$out/log" | tail -n 1)
  if ((rc != 0)) || [[ -z $runs ]]; then
    echo "run_fuzzers: FAIL: $t exited $rc"
    grep -m 20 -E "ERROR|SUMMARY|runtime error|Test unit written|deadly" "$out/log"
    failed=1
  else
    echo "run_fuzzers: $t: $runs inputs in $seconds s ($cov), no crash"
  fi
done
((failed == 0)) || exit 1
echo "run_fuzzers: PASS"
