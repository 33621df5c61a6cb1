#!/usr/bin/env bash
# Runs each fuzzer from its seed corpus for a fixed time. Exits non-zero on any crash, leak,
# timeout or out-of-memory; the offending input is kept in BUILD_DIR/fuzz-artifacts/.
# Usage: fuzz/run_smoke.sh BUILD_DIR SECONDS   (SECONDS in all, split evenly among the fuzzers)
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 BUILD_DIR SECONDS" >&2
  exit 2
fi
build_dir=$(cd "$1" && pwd)
seconds=$2
# One share per `run` line below, so a new fuzzer does not lengthen the whole run.
fuzzers=$(grep -c '^run ' "${BASH_SOURCE[0]}")
per_fuzzer=$(( seconds / fuzzers > 0 ? seconds / fuzzers : 1 ))
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
artifacts="$build_dir/fuzz-artifacts"
mkdir -p "$artifacts"

# run NAME [libFuzzer options...]: fuzz_NAME over a copy of corpus/NAME (the fuzzer adds
# inputs to its corpus; the committed seeds stay as they are).
run() {
  local name=$1
  shift
  local fuzzer="$build_dir/fuzz/fuzz_$name"
  if [[ ! -x "$fuzzer" ]]; then
    echo "$fuzzer not found: configure with -DSAFETENSORS_BUILD_FUZZ=ON and build fuzz_$name" >&2
    exit 2
  fi
  local scratch
  scratch=$(mktemp -d "${TMPDIR:-/tmp}/fuzz_$name.XXXXXX")
  cp "$here"/corpus/"$name"/* "$scratch"/
  # libFuzzer prints a line per new input; keep that in a log and show only the outcome.
  local log="$artifacts/fuzz_$name.log"
  echo "fuzz_$name: ${per_fuzzer}s from $(ls "$scratch" | wc -l) seeds (log: $log)"
  if ! "$fuzzer" -max_total_time="$per_fuzzer" -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "$@" "$scratch" >"$log" 2>&1; then
    tail -n 60 "$log"
    rm -rf "$scratch"
    exit 1
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
  rm -rf "$scratch"
}

run header -max_len=65536 -dict="$here/header.dict"
run pickle -max_len=65536 -dict="$here/pickle.dict"
run zip -max_len=262144
run npy -max_len=65536
run convert -max_len=65536
run slice -max_len=4096
run index -max_len=65536
run roundtrip -max_len=4096
run utf8 -max_len=4096
