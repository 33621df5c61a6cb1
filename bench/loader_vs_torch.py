#!/usr/bin/env python3
"""Materialized load of a GPT-2-shaped F32 checkpoint (about 500 MB), warm page cache:
libsafetensors against torch.load of the same tensors saved with torch.save, in one run.

    python3 bench/loader_vs_torch.py BUILD_DIR [--dir SCRATCH] [--repeat 5]

Our side is measured twice when it can be: the C++ loader through `safetensors bench`
(`load()` into new memory, the row "owned") and the Python package in BUILD_DIR/python
(`load_checkpoint` when it exists, else `load_file`). "Materialized" means every page of
every tensor is read after loading, so a lazily mapped result pays for its page faults.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

import torch

from model_shapes import gpt2_shapes

def write_safetensors(path, tensors):
    """A plain safetensors writer, independent of the library under test."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for t in tensors.values():
            f.write(t.contiguous().numpy().tobytes())


def touch(tensors):
    """Reads one byte of every 4 KiB page of every tensor."""
    total = 0
    for t in tensors.values():
        flat = t.reshape(-1).view(torch.uint8)
        total += int(flat[::4096].sum())
    return total


def best_of(repeat, fn):
    fn()  # warms the page cache and the allocator
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def cli_owned_seconds(build, path, threads, nbytes, repeat):
    """Seconds of `load()` into new memory as `safetensors bench` measures it."""
    cli = os.path.join(build, "tools", "safetensors")
    if not os.path.exists(cli):
        return None
    out = subprocess.run([cli, "bench", path, "--methods", "auto", "--threads", str(threads),
                          "--no-cold", "--repeat", str(repeat)],
                         check=True, capture_output=True, text=True).stdout
    match = re.search(r"^owned\s+\d+\s+([0-9.]+)", out, re.M)
    return nbytes / (float(match.group(1)) * 1e9) if match else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", help="the CMake build directory")
    parser.add_argument("--dir", default=None, help="where the two checkpoints are written")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    scratch = args.dir or os.path.join(args.build, "bench-data")
    os.makedirs(scratch, exist_ok=True)
    st_path = os.path.join(scratch, "gpt2.safetensors")
    pt_path = os.path.join(scratch, "gpt2.pt")
    shapes = gpt2_shapes()
    if not (os.path.exists(st_path) and os.path.exists(pt_path)):
        torch.manual_seed(0)
        tensors = {name: torch.randn(shape) for name, shape in shapes.items()}
        write_safetensors(st_path, tensors)
        torch.save(tensors, pt_path)
        del tensors
    nbytes = sum(4 * torch.Size(s).numel() for s in shapes.values())
    print(f"GPT-2 shaped F32 checkpoint: {len(shapes)} tensors, {nbytes / 1e6:.0f} MB; "
          f"best of {args.repeat}, warm cache, every page touched")

    torch_s = best_of(args.repeat, lambda: touch(torch.load(pt_path)))
    rows = [("torch.load", torch_s)]
    sys.path.insert(0, os.path.join(args.build, "python"))
    try:
        import libsafetensors.torch as lst
        if hasattr(lst, "load_checkpoint"):
            name = f"libsafetensors.torch.load_checkpoint(threads={args.threads})"
            rows.append((name, best_of(args.repeat,
                                       lambda: touch(lst.load_checkpoint(st_path,
                                                                         threads=args.threads)))))
            rows.append((f"load_checkpoint(dtype=torch.bfloat16, threads={args.threads})",
                         best_of(args.repeat,
                                 lambda: touch(lst.load_checkpoint(st_path, dtype=torch.bfloat16,
                                                                   threads=args.threads)))))
        rows.append(("libsafetensors.torch.load_file",
                     best_of(args.repeat, lambda: touch(lst.load_file(st_path)))))
        # How the reference's own benchmark times load_file: pages are mapped, not read.
        rows.append(("load_file, pages not touched",
                     best_of(args.repeat, lambda: len(lst.load_file(st_path)))))
    except ImportError as e:
        print(f"(Python package not importable from {args.build}/python: {e})")
    owned = cli_owned_seconds(args.build, st_path, args.threads, nbytes, args.repeat)
    if owned is not None:
        rows.append((f"C++ load() into new memory, {args.threads} threads", owned))
    print(f"{'':58}{'seconds':>9}{'GB/s':>8}{'x torch.load':>14}")
    for name, seconds in rows:
        print(f"{name:58}{seconds:9.3f}{nbytes / seconds / 1e9:8.2f}{torch_s / seconds:14.1f}")


if __name__ == "__main__":
    main()
