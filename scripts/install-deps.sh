#!/usr/bin/env bash
# Installs the Debian 12 packages needed to build, test, benchmark and fuzz libsafetensors, then
# makes the test virtual environment .venv/ from requirements-test.txt (torch 2, numpy 2, the
# reference safetensors as an oracle, transformers, diffusers). Idempotent: with everything in
# place it only queries dpkg and compares the requirements with those the venv was made from.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libsimdjson-dev libfmt-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev clang-format
  python3 python3-numpy python3-torch python3-pytest pybind11-dev python3-dev python3-venv
  zlib1g-dev
)

missing=()
for pkg in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done

# (Re)makes .venv/ when it is missing or was made from other requirements. The interpreter is
# the first python3 on PATH (CPython 3.11 on these machines); the stamp records what was
# installed, so an edited requirements file rebuilds the venv.
make_venv() {
  local root venv stamp
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  venv="$root/.venv"
  stamp="$venv/requirements-test.txt"
  if [[ -x "$venv/bin/python" ]] && cmp -s "$root/requirements-test.txt" "$stamp"; then
    echo "install-deps: $venv is up to date"
    return
  fi
  echo "install-deps: making $venv from requirements-test.txt"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$root/requirements-test.txt"
  cp "$root/requirements-test.txt" "$stamp"
}

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  make_venv
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "install-deps: missing packages (${missing[*]}) and not root; no sudo available" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends "${missing[@]}"
make_venv
