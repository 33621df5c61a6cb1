#!/usr/bin/env bash
# Builds the Python package libsafetensors on a GPU machine and runs every GPU check we have
# (bench/gpu/check_gpu.py): correctness of the CUDA paths against the reference safetensors,
# the reference's CUDA behaviour through the test alias, the Python suite, and the baseline
# host-to-device loading measurement of issue 13.
#
# Meant for the lent device machine (one H200; python3 with torch, numpy, safetensors 0.8,
# pybind11, cmake, ninja; no network, no simdjson): the build dependencies travel as Debian 12
# .deb files in .devdeps/ (see bench/gpu/README.md) and are unpacked into $DEPS, never into /.
# Everything is built into $BUILD (default /tmp/gpucheck-build), nothing in the checkout.
#
#   bash bench/gpu/check.sh            # build + all checks
#   SKIP_BENCH=1 bash bench/gpu/check.sh
#   # a dry run on a machine without a GPU (checks run on the CPU, tiny benchmark):
#   CHECK_ARGS="--device cpu --bench-gb 0.1 --reps 2" bash bench/gpu/check.sh
# Other knobs: DEBS (where the .debs are), DEPS, BUILD, PYTHON, PYBIND11_DIR, JOBS, SRC_COMMIT.
#
# Exit status: non-zero when the build or any check fails.
set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEBS=${DEBS:-$REPO/.devdeps}
DEPS=${DEPS:-/tmp/deps}
BUILD=${BUILD:-/tmp/gpucheck-build}
# Absolute (check 4 runs from another directory), symlinks kept (a venv's python is one).
PY=$(realpath -s "$(command -v "${PYTHON:-python3}")")
JOBS=${JOBS:-$(nproc)}
MULTIARCH=x86_64-linux-gnu

echo "=== libsafetensors GPU check"
echo "date (UTC): $(date -u '+%Y-%m-%d %H:%M:%S')"
echo "host: $(uname -n) $(uname -m) kernel $(uname -r)"
echo "source commit: ${SRC_COMMIT:-$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)}"
echo "python: $PY ($("$PY" --version 2>&1))"
echo "compiler: $(c++ --version 2>/dev/null | head -1 || echo 'no c++')"
echo "cmake: $(cmake --version 2>/dev/null | head -1), ninja: $(ninja --version 2>/dev/null || echo none)"
echo "cores: $(nproc)"
nvidia-smi -L 2>&1 || echo "nvidia-smi failed"
nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.current,pcie.link.width.current \
  --format=csv,noheader 2>&1 || true
df -h /dev/shm /tmp 2>/dev/null | sed 's/^/  /'
free -g 2>/dev/null | sed 's/^/  /'

# --- dependencies: unpack the carried .debs (simdjson, zlib headers + static lib, GoogleTest,
# Python headers)
t0=$(date +%s)
if [ ! -f "$DEPS/usr/include/simdjson.h" ] || [ ! -f "$DEPS/usr/include/gtest/gtest.h" ]; then
  mkdir -p "$DEPS"
  found=0
  for deb in "$DEBS"/*.deb; do
    [ -f "$deb" ] || continue
    dpkg -x "$deb" "$DEPS" || { echo "FAIL: dpkg -x $deb"; exit 2; }
    found=1
  done
  if [ $found = 0 ]; then echo "FAIL: no .deb files in $DEBS (see bench/gpu/README.md)"; exit 2; fi
fi
LIBDIR=$DEPS/usr/lib/$MULTIARCH
export LD_LIBRARY_PATH=$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

generator=Ninja
command -v ninja > /dev/null || generator="Unix Makefiles"
cmake_args=(
  -S "$REPO" -B "$BUILD" -G "$generator" -DCMAKE_BUILD_TYPE=Release
  -DSAFETENSORS_BUILD_TESTS=ON -DSAFETENSORS_BUILD_BENCH=OFF -DSAFETENSORS_BUILD_TOOLS=OFF
  -DGTest_DIR="$LIBDIR/cmake/GTest"
  -DSAFETENSORS_BUILD_PYTHON=ON
  -DPython_EXECUTABLE="$PY"
  -Dpybind11_DIR="${PYBIND11_DIR:-$("$PY" -m pybind11 --cmakedir)}"
  -DCMAKE_PREFIX_PATH="$DEPS/usr"
  -Dsimdjson_DIR="$LIBDIR/cmake/simdjson"
  # zlib1g-dev's static libz.a is position-independent: nothing to find at run time.
  -DZLIB_INCLUDE_DIR="$DEPS/usr/include"
  -DZLIB_LIBRARY="$LIBDIR/libz.a"
)
# Python's headers: the interpreter's own if it has them, else the carried copy.
pyinc=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
pyver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
if [ ! -f "$pyinc/Python.h" ]; then
  carried=$DEBS/pyinclude/python$pyver
  if [ -f "$carried/Python.h" ]; then
    echo "note: $pyinc/Python.h is missing; using the carried headers $carried"
    cmake_args+=(-DPython_INCLUDE_DIR="$carried")
  else
    echo "warning: no Python.h for python $pyver (neither $pyinc nor $carried)"
  fi
fi

# The device cast kernels: nvcc on this machine if it has one (the build finds it), else the
# fatbin carried in .devdeps/ (made by the build where nvcc is: see bench/gpu/README.md), else
# none, and the casts on the GPU are reported as unavailable.
if ! command -v nvcc > /dev/null && ! ls /usr/local/cuda*/bin/nvcc > /dev/null 2>&1 &&
  [ -f "$DEBS/cast_kernels.fatbin" ]; then
  cmake_args+=(-DSAFETENSORS_CUDA_FATBIN="$DEBS/cast_kernels.fatbin")
fi

echo "=== configure + build ($JOBS jobs) into $BUILD"
if ! cmake "${cmake_args[@]}" > "$BUILD.configure.log" 2>&1; then
  cat "$BUILD.configure.log"; echo "FAIL: configure"; exit 2
fi
grep -E "Found (ZLIB|Python|pybind11)|simdjson|Device cast kernels" "$BUILD.configure.log" |
  sed 's/^/  /'
# The Python module and the C++ device tests only (device_test's CUDA tests run on a GPU).
if ! cmake --build "$BUILD" -j "$JOBS" --target _core device_test > "$BUILD.build.log" 2>&1; then
  grep -E "error|Error" -A3 "$BUILD.build.log" | head -80; tail -20 "$BUILD.build.log"
  echo "FAIL: build"; exit 2
fi
echo "build: OK in $(( $(date +%s) - t0 )) s ($(ls "$BUILD"/python/libsafetensors/_core*.so))"

export PYTHONPATH=$BUILD/python${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
status=0

echo "=== check 0: the C++ device tests (tests/unit/device_test.cpp) against this machine's CUDA"
# device_test runs without torch, so it would not find the runtime and cuFile torch's wheels
# bring (nvidia/cu13/lib is on no loader path): name the copies the Python package would use.
libs=$("$PY" -c 'import torch
from libsafetensors import _device
print((_device._torch_runtimes() or [""])[0]); print((_device._cufile_libraries() or [""])[0])' 2>/dev/null)
cudart=$(echo "$libs" | sed -n 1p)
cufile=$(echo "$libs" | sed -n 2p)
echo "  SAFETENSORS_CUDART=${cudart:-(not found)} SAFETENSORS_CUFILE=${cufile:-(not found)}"
check0=$BUILD.device_test.log
SAFETENSORS_CUDART=${SAFETENSORS_CUDART:-$cudart} SAFETENSORS_CUFILE=${SAFETENSORS_CUFILE:-$cufile} \
  "$BUILD/tests/device_test" > "$check0" 2>&1
rc=$?
{ grep -E ": Skipped$" -A1 "$check0" | grep -v "^--$"
  grep -E "^\[  (FAILED|SKIPPED|PASSED) +\]|^\[==========\] [0-9]+ tests" "$check0"; } | tail -20
if [ $rc != 0 ]; then
  echo "FAIL: check 0 device_test (exit $rc; $check0)"; status=1
elif nvidia-smi -L > /dev/null 2>&1 && grep -q "SKIPPED \] DeviceLoadTest.CudaPathSaysWhyOrWorks" "$check0"; then
  echo "FAIL: check 0 device_test: a GPU is here but the CUDA path was skipped:"
  grep -A1 "Skipped" "$check0" | grep -i "cuda" | head -3; status=1
else
  echo "PASS: check 0 device_test"
fi

echo "=== checks 1-3 (bench/gpu/check_gpu.py)"
"$PY" "$REPO/bench/gpu/check_gpu.py" --alias-dir "$REPO/tests/python/alias" \
  ${SKIP_BENCH:+--skip-bench} ${CHECK_ARGS:-} || status=1

echo "=== check 4: the Python suite (tests/python) on this machine"
if "$PY" -c 'import pytest' 2>/dev/null; then
  mkdir -p /tmp/gpucheck-pytest
  if (cd /tmp/gpucheck-pytest && SAFETENSORS_TEST_TMP=/tmp/gpucheck-pytest \
        timeout "${PYTEST_TIMEOUT:-150}" "$PY" -m pytest -q -p no:cacheprovider \
        --tb=line -rfE "$REPO/tests/python" 2>&1 | tail -40); then
    echo "PASS: check 4 python suite"
  else
    echo "FAIL: check 4 python suite"; status=1
  fi
else
  echo "SKIP: check 4 python suite (no pytest)"
fi

echo "=== done at $(date -u '+%H:%M:%S') UTC: $([ $status = 0 ] && echo ALL PASS || echo SOME FAILED)"
exit $status
