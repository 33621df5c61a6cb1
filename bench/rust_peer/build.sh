#!/usr/bin/env bash
# Build `st_validate`, the native Rust peer of bench/vs_reference.py's whole-process
# "open 200,000 tensors" row: the reference `safetensors` crate, exactly as shipped in the
# PyPI sdist of safetensors==0.8.0, behind our small main.rs (bench/rust_peer/src).
#
#     bench/rust_peer/build.sh            # prints the binary's path as its last line
#     BUILD=/some/dir JOBS=1 bench/rust_peer/build.sh
#
# No crates.io: the crate's dependencies (serde, serde_json, hashbrown, tempfile, libc) and
# ours (memmap2) come from Debian's librust-*-dev packages, which unpack crate sources into
# /usr/share/cargo/registry; cargo builds offline with that directory replacing crates-io.
# Debian 12 has hashbrown 0.12 where the crate asks for 0.16, so the crate's Cargo.toml (in
# the build directory, never its code) gets one change: `hashbrown = "0.16"` becomes
# ">=0.12". With the crate's default `std` feature hashbrown is not used by its code at all
# (std's HashMap is), so the version does not change what is measured.
#
# Everything is written under $BUILD (default /tmp/rust-peer-build), nothing in the
# checkout. Exits 77 (ctest's skip code) when something it needs is missing and cannot be
# installed: cargo, the Debian crates (installed with apt-get when run as root), the sdist.
# ST_SDIST=/path/to/safetensors-0.8.0.tar.gz uses a tarball already at hand.
set -euo pipefail

VERSION=0.8.0
SDIST_NAME="safetensors-$VERSION.tar.gz"
SDIST_SHA256=fabaf3e0f18a6618d9b36560682562157f77c2b71fcffc7b432be2baed9d753d
REGISTRY=${DEBIAN_CARGO_REGISTRY:-/usr/share/cargo/registry}
DEBIAN_PACKAGES=(librust-serde-dev librust-serde-derive-dev librust-serde-json-dev
                 librust-hashbrown-dev librust-tempfile-dev librust-libc-dev librust-memmap2-dev)
BUILD=${BUILD:-/tmp/rust-peer-build}
JOBS=${JOBS:-2}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { echo "rust_peer: $*" >&2; }
skip() { say "$*"; say "not built (exit 77)"; exit 77; }

# ------------------------------------------------------------------------------- cargo
CARGO=${CARGO:-$(command -v cargo || true)}
[ -n "$CARGO" ] || { [ -x "$HOME/.cargo/bin/cargo" ] && CARGO=$HOME/.cargo/bin/cargo; }
[ -n "$CARGO" ] && command -v "$CARGO" >/dev/null \
    || skip "cargo not found (PATH, \$HOME/.cargo/bin or \$CARGO)"

# ------------------------------------------------------------------- Debian's crates
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
        || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            "${missing[@]}" >&2 \
            || skip "apt-get install failed; missing: ${missing[*]} (try apt-get update first)"
    else
        skip "missing Debian packages: ${missing[*]} (apt-get install them as root)"
    fi
fi
for crate in serde serde_derive serde_json hashbrown tempfile libc memmap2; do
    compgen -G "$REGISTRY/$crate-[0-9]*" >/dev/null || skip "crate $crate not in $REGISTRY"
done

# ------------------------------------------------------------------------- the sdist
# `pip download --no-binary :all: safetensors==0.8.0` fetches this very file but then insists
# on preparing its metadata, which runs maturin and `cargo metadata` against crates.io, and
# fails offline, leaving nothing behind. So the file is taken from the same package index
# pip uses (PIP_INDEX_URL, default PyPI's simple index) and checked against its sha256.
mkdir -p "$BUILD/sdist"
SDIST="$BUILD/sdist/$SDIST_NAME"
sha_ok() { [ -f "$1" ] && echo "$SDIST_SHA256  $1" | sha256sum -c --status; }
if [ -n "${ST_SDIST:-}" ]; then
    sha_ok "$ST_SDIST" || skip "ST_SDIST=$ST_SDIST is not $SDIST_NAME (sha256 $SDIST_SHA256)"
    cp "$ST_SDIST" "$SDIST"
elif ! sha_ok "$SDIST"; then
    say "downloading $SDIST_NAME"
    python3 - "$SDIST" "$SDIST_NAME" "$SDIST_SHA256" "${PIP_INDEX_URL:-https://pypi.org/simple}" <<'PY' \
        || skip "could not download $SDIST_NAME (set ST_SDIST to a local copy)"
import hashlib, re, sys, urllib.parse, urllib.request
dest, name, sha, index = sys.argv[1:]
page_url = index.rstrip("/") + "/safetensors/"
page = urllib.request.urlopen(page_url, timeout=60).read().decode()
links = [urllib.parse.urljoin(page_url, h) for h in re.findall(r'href="([^"]+)"', page)
         if urllib.parse.urlsplit(h).path.endswith("/" + name)]
if not links:
    sys.exit(f"{name} not listed at {page_url}")
data = urllib.request.urlopen(links[0].split("#")[0], timeout=120).read()
if hashlib.sha256(data).hexdigest() != sha:
    sys.exit(f"{name}: sha256 mismatch")
with open(dest + ".part", "wb") as f:
    f.write(data)
import os; os.replace(dest + ".part", dest)
PY
fi

# ------------------------------------------------------------------ the cargo project
# $BUILD/peer: our Cargo.toml and main.rs, verbatim; $BUILD/crate/safetensors (the path our
# Cargo.toml names): the crate, its src/ untouched, its Cargo.toml with hashbrown relaxed.
rm -rf "$BUILD/src" "$BUILD/peer" "$BUILD/crate"
mkdir -p "$BUILD/src" "$BUILD/crate" "$BUILD/peer/.cargo"
tar -xzf "$SDIST" -C "$BUILD/src"
CRATE_SRC="$BUILD/src/safetensors-$VERSION/safetensors"
[ -f "$CRATE_SRC/Cargo.toml" ] || skip "no safetensors/Cargo.toml in $SDIST_NAME"
cp -r "$CRATE_SRC" "$BUILD/crate/safetensors"
cp "$HERE/Cargo.toml" "$BUILD/peer/Cargo.toml"
cp -r "$HERE/src" "$BUILD/peer/src"
CRATE_TOML="$BUILD/crate/safetensors/Cargo.toml"
sed -i 's/^hashbrown = { version = "0\.16"/hashbrown = { version = ">=0.12"/' "$CRATE_TOML"
grep -q '^hashbrown = { version = ">=0.12"' "$CRATE_TOML" \
    || skip "the crate's hashbrown requirement is not the expected one; see $CRATE_TOML"
say "changes to the crate's Cargo.toml:"
diff "$CRATE_SRC/Cargo.toml" "$CRATE_TOML" >&2 || true
cat > "$BUILD/peer/.cargo/config.toml" <<TOML
[source.crates-io]
replace-with = "debian"

[source.debian]
directory = "$REGISTRY"

[net]
offline = true
TOML

# ------------------------------------------------------------------------------ build
say "building with $CARGO ($("$CARGO" --version)), -j$JOBS"
(cd "$BUILD/peer" && CARGO_TARGET_DIR="$BUILD/target" "$CARGO" build --release --offline \
    -j "$JOBS" >&2)
cp "$BUILD/target/release/st_validate" "$BUILD/st_validate.tmp"
mv "$BUILD/st_validate.tmp" "$BUILD/st_validate"

# A smoke test: one F32 tensor of one element, then a truncated copy that must be refused.
header='{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
python3 - "$BUILD/smoke.safetensors" "$header" <<'PY'
import struct, sys
h = sys.argv[2].encode()
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + b"\0" * 4)
PY
[ "$("$BUILD/st_validate" "$BUILD/smoke.safetensors")" = 1 ] || { say "smoke test failed"; exit 1; }
head -c -1 "$BUILD/smoke.safetensors" > "$BUILD/smoke-bad.safetensors"
if "$BUILD/st_validate" "$BUILD/smoke-bad.safetensors" >/dev/null 2>&1; then
    say "smoke test failed: a truncated file was accepted"; exit 1
fi
echo "$BUILD/st_validate"
