#!/usr/bin/env bash
# Runs fuzz_header from the seed corpus for a fixed time. Exits non-zero on any crash, leak,
# timeout or out-of-memory; the offending input is kept in BUILD_DIR/fuzz-artifacts/.
# Usage: fuzz/run_smoke.sh BUILD_DIR SECONDS
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 BUILD_DIR SECONDS" >&2
  exit 2
fi
build_dir=$(cd "$1" && pwd)
seconds=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fuzzer="$build_dir/fuzz/fuzz_header"
if [[ ! -x "$fuzzer" ]]; then
  echo "$fuzzer not found: configure with -DSAFETENSORS_BUILD_FUZZ=ON and build fuzz_header" >&2
  exit 2
fi

# The fuzzer adds inputs to its corpus; the committed seeds stay as they are.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/fuzz_header.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
cp "$here"/corpus/header/* "$scratch"/
artifacts="$build_dir/fuzz-artifacts"
mkdir -p "$artifacts"

"$fuzzer" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
  -dict="$here/header.dict" -artifact_prefix="$artifacts/" -print_final_stats=1 "$scratch"
