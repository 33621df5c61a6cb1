#!/usr/bin/env bash
# Runs safetensors_bench from BUILD_DIR and prints a Markdown table of the results as
# ratios against their references. Usage: bench/run.sh BUILD_DIR [extra benchmark flags]
set -euo pipefail

build_dir=${1:?usage: bench/run.sh BUILD_DIR [benchmark flags]}
shift
bench="$build_dir/bench/safetensors_bench"
if [[ ! -x "$bench" ]]; then
  echo "bench/run.sh: $bench not found; build it with" >&2
  echo "  cmake --build $build_dir --target safetensors_bench" >&2
  exit 1
fi
mkdir -p "$build_dir/bench-data"
results="$build_dir/bench-data/results.json"

# Five repetitions, medians only: steady numbers on a shared machine in well under 2 minutes.
"$bench" --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
  --benchmark_min_time=0.3 --benchmark_out="$results" --benchmark_out_format=json "$@" >&2

python3 - "$results" <<'PY'
import json, sys

with open(sys.argv[1]) as f:
    report = json.load(f)
median = {}
for b in report["benchmarks"]:
    if b.get("aggregate_name") == "median":
        median[b["run_name"]] = b

def find(prefix):
    for name, b in median.items():
        if name.startswith(prefix):
            return b
    sys.exit(f"bench/run.sh: no result for {prefix} in {sys.argv[1]}")

def rate(b):  # bytes per second -> MB/s (10^6)
    return b["bytes_per_second"] / 1e6

def ms(b):
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
    return b["real_time"] * scale

rows = []
for n in (1000, 200000):
    b = find(f"BM_ParseHeader/{n}/")
    # bench/vs_reference.py compares opening 200,000 tensors with the reference package.
    rows.append((f"Header parse+validate, {n:,} tensors ({b['header_bytes'] / 1e6:.1f} MB)",
                 f"{rate(b):,.0f} MB/s ({ms(b):.2f} ms)", "", ""))
b = find("BM_OpenFromMemory")
rows.append(("File::from_source (memory), 200,000 tensors", f"{ms(b):.1f} ms", "", ""))
for arg, backend in ((0, "mmap"), (1, "pread")):
    b = find(f"BM_OpenFile/{arg}/")
    rows.append((f"File::open ({backend}), 200,000 tensors", f"{ms(b):.1f} ms", "", ""))

memcpy = rate(find("BM_Memcpy/"))
fresh = rate(find("BM_MemcpyFresh/"))
mem_text = f"memcpy {memcpy / 1e3:.2f} GB/s"
for arg, backend in ((0, "mmap"), (1, "pread")):
    b = find(f"BM_ReadAll/{arg}/")
    rows.append((f"Read every tensor, {backend} (~260 MB, warm cache)",
                 f"{rate(b) / 1e3:.2f} GB/s", mem_text, f"{rate(b) / memcpy:.2f}"))
for name, label in (("BM_WriteToBuffer", "write_to_buffer (~260 MB)"),
                    ("BM_WriteFile", "write_file (~260 MB, incl. fsync)")):
    b = find(name)
    rows.append((label, f"{rate(b) / 1e3:.2f} GB/s", mem_text, f"{rate(b) / memcpy:.2f}"))
rows.append(("memcpy into a fresh allocation (~260 MB)", f"{fresh / 1e3:.2f} GB/s", mem_text,
             f"{fresh / memcpy:.2f}"))

print()
print("| Benchmark | Result | Reference | Ratio |")
print("|---|---:|---|---:|")
for r in rows:
    print("| " + " | ".join(r) + " |")
ctx = report.get("context", {})
print()
print(f"{ctx.get('num_cpus', '?')} CPUs at {ctx.get('mhz_per_cpu', '?')} MHz, medians of 5 "
      f"repetitions, MB and GB are 10^6 and 10^9 bytes; raw results in {sys.argv[1]}")
PY

# The conversion benchmark makes a 500 MB checkpoint and runs torch, so it is opt-in:
# SAFETENSORS_CONVERT_BENCH=1 bench/run.sh BUILD_DIR (needs torch in $PYTHON, default python3).
if [[ "${SAFETENSORS_CONVERT_BENCH:-0}" == 1 ]]; then
  "${PYTHON:-python3}" "$(dirname "${BASH_SOURCE[0]}")/convert_bench.py" "$build_dir"
fi
