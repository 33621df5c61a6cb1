#!/usr/bin/env bash
# Runs every check: formatting, a warnings-as-errors Release build with all tests, the unit
# tests again under AddressSanitizer + UndefinedBehaviorSanitizer (clang) together with a
# replay of every fuzzer's seed corpus, and a short fuzz run. Every stage runs even when an
# earlier one fails (unless it depends on it); the summary at the end lists each stage and
# the exit status is non-zero if any failed.
# Both builds compile the device cast kernels (src/device/cast_kernels.cu) with nvcc when they
# find one (PATH, /usr/local/cuda/bin, /usr/local/cuda-*/bin: see src/CMakeLists.txt); nvcc
# compiles device code only, with its own host compiler (g++), so the clang ASan build embeds
# the same fatbin. Without nvcc the kernels' test is skipped, saying so.
#   FUZZ_SECONDS  seconds for the whole fuzz smoke run, split evenly among the fuzzers (the
#                 `run` lines of fuzz/run_smoke.sh; default 240)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

jobs=$(nproc 2>/dev/null || echo 2)
fuzz_seconds=${FUZZ_SECONDS:-240}
# Tests labelled "slow" (those writing or inflating gigabytes, listed in tests/CMakeLists.txt),
# "bench" (timings) and "rss" (peak-memory bounds, which the sanitizers' own allocations would
# break) run only in the Release pass.
asan_exclude_labels="slow|bench|rss"

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

# ctest shows the output of a passing test only with -V, so the skips inside one (pytest's
# summary line per skip with its reason; GoogleTest's reason and [  SKIPPED ] lines) are
# printed from the log ctest keeps of every test's output.
show_skips() {
  local log=$1/Testing/Temporary/LastTest.log
  [[ -f $log ]] || return 0
  local skips
  skips=$(grep -E -B1 '^\[  SKIPPED \] .* \([0-9]+ ms\)$' "$log" | grep -v -x -e '--' || true)
  skips+=$'\n'$(grep -E '^SKIPPED \[' "$log" || true)
  skips=$(sed '/^$/d' <<<"$skips")
  if [[ -n $skips ]]; then
    printf 'Skipped in %s:\n%s\n' "$1" "$skips"
  else
    printf 'Nothing skipped in %s\n' "$1"
  fi
}

# run_ctest DIR [ctest options...]: the tests, then what they skipped, then their status.
run_ctest() {
  local dir=$1 rc=0
  shift
  ctest --test-dir "$dir" --output-on-failure -j2 "$@" || rc=$?
  show_skips "$dir"
  return $rc
}

test_release() { run_ctest build; }

build_asan() {
  CC=clang CXX=clang++ cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSAFETENSORS_SANITIZE=ON -DSAFETENSORS_BUILD_FUZZ=ON -DSAFETENSORS_WERROR=ON \
    -DSAFETENSORS_BUILD_BENCH=OFF
  cmake --build build-asan -j"$jobs"
}

test_asan() { run_ctest build-asan -LE "$asan_exclude_labels"; }

fuzz_smoke() { bash fuzz/run_smoke.sh build-asan "$fuzz_seconds"; }

pip_install() { bash scripts/check-pip-install.sh; }

# The reference's own tests (fetched from PyPI into build/reference-suite/, never stored here)
# against the package built in build/python, through install_as_safetensors().
reference_suite_summary=build/reference-suite/summary.txt
reference_suite() {
  local log=build/reference-suite/pytest.log rc=0
  mkdir -p build/reference-suite
  rm -f "$reference_suite_summary"
  PYTHONPATH="$PWD/build/python" .venv/bin/python scripts/reference_suite.py -q 2>&1 |
    tee "$log" || rc=$?
  # pytest's last line: "N passed, N skipped, N xfailed in Ts" (failed, errors too if any).
  grep -E '^=* ?[0-9]+ (passed|failed|skipped|xfailed|error)' "$log" | tail -n 1 |
    sed -E 's/^=+ //; s/ =+$//' >"$reference_suite_summary" || true
  printf 'reference 0.8 suite: %s\n' "$(cat "$reference_suite_summary")"
  return $rc
}

stage "install dependencies" bash scripts/install-deps.sh || true
stage "clang-format check" check_format || true
if stage "Release build (-Werror) in build/" build_release; then
  stage "Release tests (ctest)" test_release || true
  if [[ -x .venv/bin/python ]]; then
    stage "reference 0.8 suite through the shim" reference_suite || true
    [[ ! -s $reference_suite_summary ]] || summary+=("      $(cat "$reference_suite_summary")")
  else
    skip "reference 0.8 suite through the shim" "no .venv/"
  fi
else
  skip "Release tests (ctest)" "the build failed"
  skip "reference 0.8 suite through the shim" "the build failed"
fi
stage "pip install . into a fresh venv (build/pip-venv)" pip_install || true
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
