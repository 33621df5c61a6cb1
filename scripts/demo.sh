#!/usr/bin/env bash
# The main job on a built-in example: build and install libsafetensors, convert the small
# built-in PyTorch checkpoint examples/data/tiny_model.bin with the installed `safetensors`
# command (no Python, no pickle code run), scan the pickle, inspect and load the result; then
# build the consumer project examples/ against the installed package and write and read a
# sample checkpoint with it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

jobs=$(nproc 2>/dev/null || echo 2)
step() { printf '\n==> %s\n' "$*"; }

step "1/9 Installing build dependencies (skipped when already present)"
bash scripts/install-deps.sh

step "2/9 Configuring a Release build in build/"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release

step "3/9 Building the library and the safetensors command with $jobs jobs"
cmake --build build -j"$jobs"

step "4/9 Installing into out/prefix"
cmake --install build --prefix out/prefix

st=out/prefix/bin/safetensors
step "5/9 Converting the built-in PyTorch checkpoint examples/data/tiny_model.bin"
echo "\$ safetensors scan examples/data/tiny_model.bin"
"$st" scan examples/data/tiny_model.bin
echo
echo "\$ safetensors convert examples/data/tiny_model.bin out/tiny_model.safetensors"
"$st" convert examples/data/tiny_model.bin out/tiny_model.safetensors

step "6/9 Inspecting, validating and loading the converted checkpoint"
echo "\$ safetensors inspect out/tiny_model.safetensors"
"$st" inspect out/tiny_model.safetensors
echo
echo "\$ safetensors validate out/tiny_model.safetensors"
"$st" validate out/tiny_model.safetensors
echo
echo "\$ safetensors get out/tiny_model.safetensors transformer.h.0.attn.c_attn.weight -n 8"
"$st" get out/tiny_model.safetensors transformer.h.0.attn.c_attn.weight -n 8

step "7/9 Building examples/ against the installed package (find_package(safetensors))"
cmake -S examples -B out/examples -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PWD/out/prefix"
cmake --build out/examples -j"$jobs"

step "8/9 Writing out/sample.safetensors, reading it back and checking every value"
out/examples/write_sample out/sample.safetensors

step "9/9 Looking at the sample with the installed command"
echo "\$ safetensors inspect out/sample.safetensors"
out/prefix/bin/safetensors inspect out/sample.safetensors
echo
echo "\$ safetensors validate out/sample.safetensors"
out/prefix/bin/safetensors validate out/sample.safetensors
echo
echo "\$ safetensors get out/sample.safetensors model.embed_tokens.weight -n 8"
out/prefix/bin/safetensors get out/sample.safetensors model.embed_tokens.weight -n 8

printf '\nDemo finished: library in out/prefix, converted checkpoint in out/tiny_model.safetensors,\n'
printf 'sample checkpoint in out/sample.safetensors.\n'
