#!/usr/bin/env bash
# The main job on a built-in example: build and install libsafetensors, build the consumer
# project examples/ against the installed package, write a sample checkpoint with it and
# look at that checkpoint with the installed `safetensors` command.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

jobs=$(nproc 2>/dev/null || echo 2)
step() { printf '\n==> %s\n' "$*"; }

step "1/7 Installing build dependencies (skipped when already present)"
bash scripts/install-deps.sh

step "2/7 Configuring a Release build in build/"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release

step "3/7 Building the library and the safetensors command with $jobs jobs"
cmake --build build -j"$jobs"

step "4/7 Installing into out/prefix"
cmake --install build --prefix out/prefix

step "5/7 Building examples/ against the installed package (find_package(safetensors))"
cmake -S examples -B out/examples -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PWD/out/prefix"
cmake --build out/examples -j"$jobs"

step "6/7 Writing out/sample.safetensors, reading it back and checking every value"
out/examples/write_sample out/sample.safetensors

step "7/7 Looking at the sample with the installed command"
echo "\$ safetensors inspect out/sample.safetensors"
out/prefix/bin/safetensors inspect out/sample.safetensors
echo
echo "\$ safetensors validate out/sample.safetensors"
out/prefix/bin/safetensors validate out/sample.safetensors
echo
echo "\$ safetensors get out/sample.safetensors model.embed_tokens.weight -n 8"
out/prefix/bin/safetensors get out/sample.safetensors model.embed_tokens.weight -n 8

printf '\nDemo finished: library in out/prefix, sample checkpoint in out/sample.safetensors.\n'
