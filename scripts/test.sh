#!/usr/bin/env bash
# Runs every check: formatting, a warnings-as-errors Release build with all tests, the unit
# tests again under AddressSanitizer + UndefinedBehaviorSanitizer (clang) together with a
# replay of every fuzzer's seed corpus, and a short fuzz run. Every stage runs even when an
# earlier one fails (unless it depends on it); the summary at the end lists each stage and
# the exit status is non-zero if any failed.
#   FUZZ_SECONDS  seconds for the whole fuzz smoke run, split evenly among the fuzzers (the
#                 `run` lines of fuzz/run_smoke.sh; default 240)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

jobs=$(nproc 2>/dev/null || echo 2)
fuzz_seconds=${FUZZ_SECONDS:-240}
# Tests labelled "slow" (e.g. huge files) run only in the Release pass.
asan_exclude_labels=slow

declare -a summary=()
failed=0

# Runs a stage in a subshell with `set -e` in force and records its outcome.
stage() {
  local name=$1
  shift
  printf '\n==> %s\n' "$name"
  local start=$SECONDS rc=0
  set +e
  (
    set -euo pipefail
    "$@"
  )
  rc=$?
  set -e
  local took=$((SECONDS - start))
  if [[ $rc -eq 0 ]]; then
    summary+=("PASS  $name (${took}s)")
  else
    summary+=("FAIL  $name (exit $rc, ${took}s)")
    failed=1
  fi
  return $rc
}

skip() {
  printf '\n==> %s: skipped (%s)\n' "$1" "$2"
  summary+=("SKIP  $1 ($2)")
}

check_format() {
  local files=()
  mapfile -t files < <(find src include tools tests bench examples fuzz \
    -type f \( -name '*.cpp' -o -name '*.hpp' -o -name '*.h' -o -name '*.cc' \) 2>/dev/null | sort)
  echo "clang-format --dry-run -Werror on ${#files[@]} files"
  [[ ${#files[@]} -eq 0 ]] || clang-format --dry-run -Werror "${files[@]}"
}

build_release() {
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DSAFETENSORS_WERROR=ON
  cmake --build build -j"$jobs"
}

test_release() { ctest --test-dir build --output-on-failure -j2; }

build_asan() {
  CC=clang CXX=clang++ cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSAFETENSORS_SANITIZE=ON -DSAFETENSORS_BUILD_FUZZ=ON -DSAFETENSORS_WERROR=ON \
    -DSAFETENSORS_BUILD_BENCH=OFF
  cmake --build build-asan -j"$jobs"
}

test_asan() {
  ctest --test-dir build-asan --output-on-failure -j2 -LE "$asan_exclude_labels"
}

fuzz_smoke() { bash fuzz/run_smoke.sh build-asan "$fuzz_seconds"; }

stage "install dependencies" bash scripts/install-deps.sh || true
stage "clang-format check" check_format || true
if stage "Release build (-Werror) in build/" build_release; then
  stage "Release tests (ctest)" test_release || true
else
  skip "Release tests (ctest)" "the build failed"
fi
if stage "ASan+UBSan build (clang) in build-asan/" build_asan; then
  stage "ASan+UBSan tests (ctest -LE $asan_exclude_labels)" test_asan || true
  if [[ -f fuzz/run_smoke.sh ]]; then
    stage "fuzz smoke run (${fuzz_seconds}s)" fuzz_smoke || true
  else
    printf '\n==> fuzz smoke run: fuzz/run_smoke.sh does not exist\n'
    summary+=("FAIL  fuzz smoke run (fuzz/run_smoke.sh does not exist)")
    failed=1
  fi
else
  skip "ASan+UBSan tests" "the build failed"
  skip "fuzz smoke run" "the build failed"
fi

printf '\n==================== summary ====================\n'
printf '%s\n' "${summary[@]}"
if [[ $failed -ne 0 ]]; then
  printf 'RESULT: FAILED\n'
  exit 1
fi
printf 'RESULT: all checks passed\n'
