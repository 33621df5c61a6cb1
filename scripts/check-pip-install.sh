#!/usr/bin/env bash
# Installs the package the way Python users do, `pip install .` into a fresh venv, and checks
# what it installed: the module imports and round-trips a tensor, the `safetensors` command is
# on the venv's PATH, `python -m libsafetensors` runs it, and all report the one version of
# CMakeLists.txt. Versions of what pip fetches are held to requirements-test.txt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=build/pip-venv
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -qq --disable-pip-version-check -c requirements-test.txt .

version=$(sed -n 's/^project(safetensors VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
echo "pip installed libsafetensors; CMakeLists.txt says version $version"

expect_version() {
  local what=$1 got=$2
  if [[ "$got" != *"$version"* ]]; then
    echo "FAIL: $what reports '$got', not $version" >&2
    exit 1
  fi
  echo "ok: $what reports $got"
}
# The command from PATH, as a user of the venv calls it.
expect_version "safetensors --version" "$(PATH="$PWD/$venv/bin:/usr/bin:/bin" safetensors --version)"
expect_version "python -m libsafetensors --version" \
  "$("$venv/bin/python" -m libsafetensors --version)"

cd "$venv"  # import the installed package, not the source tree
bin/python - "$version" <<'PY'
import importlib.metadata
import sys
import numpy as np
import libsafetensors
from libsafetensors.numpy import load, save

version = sys.argv[1]
assert libsafetensors.__version__ == version, libsafetensors.__version__
assert importlib.metadata.version("libsafetensors") == version
assert "site-packages" in libsafetensors.__file__, libsafetensors.__file__
tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([True, False])}
back = load(save(tensors))
assert sorted(back) == ["b", "w"] and all(np.array_equal(back[k], tensors[k]) for k in tensors)
print(f"ok: import from {libsafetensors.__file__}, numpy {np.__version__} round trip")
PY
