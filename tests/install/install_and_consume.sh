#!/usr/bin/env bash
# Installs a build tree into a scratch prefix, checks the installed files, then builds and
# runs two consumers against the installation: examples/ through find_package(safetensors)
# and a one-file program through pkg-config.
# Usage: install_and_consume.sh BUILD_DIR SOURCE_DIR WORK_DIR LIBDIR CXX [EXTRA_FLAGS]
set -euo pipefail

build_dir=$1 source_dir=$2 work=$3 libdir=$4 cxx=$5 flags=${6:-}
prefix="$work/prefix"

fail() {
  echo "install_and_consume: FAIL: $*" >&2
  exit 1
}
step() { echo "== $*"; }

rm -rf "$work"
mkdir -p "$work"

step "cmake --install $build_dir --prefix $prefix"
cmake --install "$build_dir" --prefix "$prefix" >"$work/install.log" ||
  { cat "$work/install.log" >&2; fail "cmake --install failed"; }

step "checking installed files"
for f in bin/safetensors include/safetensors/safetensors.hpp include/safetensors/version.hpp \
  "$libdir/cmake/safetensors/safetensorsConfig.cmake" \
  "$libdir/cmake/safetensors/safetensorsConfigVersion.cmake" \
  "$libdir/cmake/safetensors/safetensorsTargets.cmake" \
  "$libdir/pkgconfig/safetensors.pc"; do
  [[ -f "$prefix/$f" ]] || fail "$prefix/$f was not installed"
done
[[ -x "$prefix/bin/safetensors" ]] || fail "$prefix/bin/safetensors is not executable"
compgen -G "$prefix/$libdir/libsafetensors.*" >/dev/null ||
  fail "no libsafetensors.a or .so in $prefix/$libdir"
# A shared build needs the loader to find the installed library.
export LD_LIBRARY_PATH="$prefix/$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

step "building examples/ against the installed CMake package"
cmake -S "$source_dir/examples" -B "$work/examples" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" >"$work/configure.log" ||
  { cat "$work/configure.log" >&2; fail "configuring examples/ against $prefix failed"; }
cmake --build "$work/examples" >"$work/build.log" 2>&1 ||
  { cat "$work/build.log" >&2; fail "building examples/ against $prefix failed"; }

step "write_sample $work/sample.safetensors"
"$work/examples/write_sample" "$work/sample.safetensors" || fail "write_sample failed"

step "safetensors validate $work/sample.safetensors"
"$prefix/bin/safetensors" validate "$work/sample.safetensors" ||
  fail "the installed safetensors command rejected the sample"

step "compiling a one-file consumer with pkg-config"
export PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig"
pkg_flags=$(pkg-config --cflags --libs safetensors) || fail "pkg-config does not find safetensors"
cat >"$work/pc_consumer.cpp" <<'CPP'
#include <iostream>
#include <safetensors/safetensors.hpp>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const safetensors::File file = safetensors::File::open(argv[1]);
  std::cout << "pc_consumer: " << file.size() << " tensors, safetensors "
            << SAFETENSORS_VERSION_STRING << "\n";
  return file.size() == 0 ? 1 : 0;
}
CPP
# shellcheck disable=SC2086  # both flag lists are meant to be split into words
"$cxx" $flags "$work/pc_consumer.cpp" -o "$work/pc_consumer" $pkg_flags ||
  fail "compiling with: $cxx $flags ... $pkg_flags"
"$work/pc_consumer" "$work/sample.safetensors" || fail "the pkg-config consumer failed"

echo "install_and_consume: OK"
