#!/usr/bin/env bash
# Checks what the shared libraries export: every dynamic symbol must be part of the public
# API (namespace safetensors, nothing under safetensors::detail, no std:: instantiations), and
# a few public entry points must be there.
# Usage: check_exports.sh LIBRARY.so...
set -euo pipefail

status=0
for library in "$@"; do
  symbols=$(nm -D --defined-only -C "$library" | cut -d' ' -f3-)
  count=$(wc -l <<<"$symbols")
  # Version nodes and the public API; everything else is internal.
  internal=$(grep -v -E '^(typeinfo for |typeinfo name for |vtable for )?safetensors::' <<<"$symbols" |
    grep -v -E '^[A-Z_]+$' || true)
  internal+=$'\n'$(grep -E '(^|[^A-Za-z_])safetensors::detail::|^safetensors::[^(]*::\{lambda|anonymous namespace' <<<"$symbols" || true)
  internal=$(sed '/^$/d' <<<"$internal")
  if [[ -n $internal ]]; then
    echo "$library exports $(wc -l <<<"$internal") internal symbol(s) of $count:"
    sed 's/^/  /' <<<"$internal" | head -40
    status=1
  else
    echo "$library: all $count exported symbols are public API"
  fi
done

# The public entry points, one per public header family, must be exported.
all=$(for library in "$@"; do nm -D --defined-only -C "$library"; done)
for needed in 'safetensors::File::open(' 'safetensors::parse_header(' 'safetensors::write_file(' \
  'safetensors::Checkpoint::open(' 'safetensors::load(' 'safetensors::cast(' \
  'safetensors::open_mmap_source(' 'safetensors::AtomicFile::commit(' 'typeinfo for safetensors::Error' \
  'safetensors::convert_file(' 'safetensors::scan_file(' 'safetensors::load_to_cuda(' \
  'safetensors::cuda_status('; do
  if ! grep -qF -- "$needed" <<<"$all"; then
    echo "missing from the exports: $needed"
    status=1
  fi
done
exit $status
