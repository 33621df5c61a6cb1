#!/usr/bin/env python3
"""Peak host memory of a device_map load (issue 14): half of a checkpoint on the cpu, half on
disk, against the target "the largest shard + 64 MB above the tensors kept on the CPU".

    PYTHONPATH=build/python .venv/bin/python bench/device_map_load.py [--quick] [--reps N]
        [--dir DIR] [--json FILE]

Input (made once in --dir, reused while its manifest matches): a Llama-shaped F32 checkpoint
of about 1.6 GB in 4 shards (an embedding, 24 layers of two 32 MiB matrices and a norm, and
lm_head), with transformers' index. --quick makes a few MB of it, for the ctest smoke run.

The map is `libsafetensors.plan_device_map(dir, {"cpu": total / 2}, no_split=["model.layers.*"])`:
the first half of the layers on the cpu, the rest on disk. Rows, each in a fresh process
(this script with --worker) that imports torch and libsafetensors and loads a tiny file
before measuring:
- `device_map`: load_checkpoint(dir, device_map=plan), then one byte of every 4 KiB page of
  the cpu tensors read (the disk tensors left alone: reading them is what disk means to avoid);
- `device_map bf16`: the same with dtype=torch.bfloat16 (cpu tensors converted into new
  memory, disk tensors views as stored);
- `plain`: load_checkpoint(dir), every page touched, for comparison.

Peak memory is the worker's peak resident set (VmHWM, reset through /proc/self/clear_refs after
the imports and the warm-up) minus its resident set before the load, as bench/cold_load.py
measures it; mapped file pages count once this process maps them, pages the kernel reads
ahead into its cache do not. The bound of the device_map rows is the bytes of their cpu
tensors (as loaded) + the largest shard + 64 MB; the plain row has no bound. Medians over
--reps (default 3, --quick 1). Exits 77 (ctest's skip) without torch or where VmHWM cannot be
reset, 1 when a row fails to run or a device_map row misses the bound.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile

from bench_common import (SKIP_STATUS, argument_parser, load_text, reset_peak, status_kib,
                          touch)

MB = 1e6
SLACK = 64 * MB
MiB = 1 << 20


# --------------------------------------------------------------------------- the input

def spec(quick):
    """(layers, rows of each matrix, columns, shards): 24 x 2 x 32 MiB, or a few MB."""
    return (4, 64, 1024, 4) if quick else (24, 2048, 4096, 4)


def make_input(directory, quick):
    import torch
    from libsafetensors.torch import save_file

    layers, rows, cols, shards = spec(quick)
    manifest = os.path.join(directory, "manifest.json")
    wanted = {"layers": layers, "rows": rows, "cols": cols, "shards": shards, "version": 1}
    try:
        with open(manifest) as f:
            if json.load(f) == wanted:
                return
    except (OSError, ValueError):
        pass
    os.makedirs(directory, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    names = ["model.embed_tokens.weight"]
    shapes = {"model.embed_tokens.weight": (rows // 4, cols)}
    for i in range(layers):
        for part in ("self_attn.o_proj.weight", "mlp.up_proj.weight"):
            names.append(f"model.layers.{i}.{part}")
            shapes[names[-1]] = (rows, cols)
        names.append(f"model.layers.{i}.input_layernorm.weight")
        shapes[names[-1]] = (cols,)
    names += ["model.norm.weight", "lm_head.weight"]
    shapes.update({"model.norm.weight": (cols,), "lm_head.weight": (rows // 4, cols)})
    total = sum(4 * _numel(s) for s in shapes.values())
    per_shard = -(-total // shards) + 4 * rows * cols  # slack: no fifth shard of leftovers
    weight_map, group, size = {}, [], 0
    files = []

    def flush():
        nonlocal group, size
        if group:
            files.append(f"model-{len(files) + 1:05d}.safetensors")
            save_file({n: torch.randn(shapes[n], generator=g) for n in group},
                      os.path.join(directory, files[-1]))
            weight_map.update({n: files[-1] for n in group})
        group, size = [], 0

    for name in names:
        if size and size + 4 * _numel(shapes[name]) > per_shard:
            flush()
        group.append(name)
        size += 4 * _numel(shapes[name])
    flush()
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    save_file({"x": torch.zeros(4)}, os.path.join(directory, "warmup.safetensors"))
    with open(manifest, "w") as f:
        json.dump(wanted, f)


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


# --------------------------------------------------------------------------- the worker

def worker(task):
    import torch
    import libsafetensors
    from libsafetensors.torch import load_checkpoint

    directory = task["dir"]
    plan = libsafetensors.plan_device_map(directory, {"cpu": task["cpu_budget"]},
                                          no_split=["model.layers.*"])
    dtype = torch.bfloat16 if task["row"] == "device_map bf16" else None
    touch(load_checkpoint(os.path.join(directory, "warmup.safetensors")))
    rss_before = status_kib("VmRSS")
    if not reset_peak():
        return {"no_reset": True}
    if task["row"] == "plain":
        tensors = load_checkpoint(directory)
        cpu = dict(tensors)
    else:
        tensors = load_checkpoint(directory, device_map=plan, dtype=dtype)
        from libsafetensors._convert import device_for
        cpu = {n: t for n, t in tensors.items() if device_for(plan, n) == "cpu"}
    touch(cpu)
    peak = status_kib("VmHWM")
    return {"peak_delta": (peak - rss_before) * 1024,
            "cpu_bytes": sum(t.numel() * t.element_size() for t in cpu.values()),
            "disk_tensors": len(tensors) - len(cpu)}


# --------------------------------------------------------------------------- the driver

def main():
    parser = argument_parser(__doc__, "a few MB, one repetition (the ctest smoke run)")
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(),
                                                      "safetensors-device-map-bench"))
    parser.add_argument("--json", default=None, metavar="FILE")
    parser.add_argument("--worker", default=None, help="(internal)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    try:
        import torch  # noqa: F401
    except ImportError:
        print("device_map_load: skipped, torch is not installed")
        return SKIP_STATUS
    if not reset_peak():
        print("device_map_load: skipped, /proc/self/clear_refs cannot reset VmHWM here")
        return SKIP_STATUS
    import libsafetensors

    directory = args.dir + ("-quick" if args.quick else "")
    make_input(directory, args.quick)
    checkpoint = libsafetensors.Checkpoint(directory)
    total = checkpoint.total_size
    largest = max(os.path.getsize(f) for f in checkpoint.files())
    cpu_budget = total // 2
    plan = libsafetensors.plan_device_map(checkpoint, {"cpu": cpu_budget},
                                          no_split=["model.layers.*"])
    reps = args.reps or (1 if args.quick else 3)
    me = os.path.abspath(__file__)
    rows = ["device_map", "device_map bf16", "plain"]
    results = {row: [] for row in rows}
    for rep in range(reps):
        for row in rows[rep % len(rows):] + rows[:rep % len(rows)]:
            task = {"dir": directory, "row": row, "cpu_budget": cpu_budget}
            proc = subprocess.run([sys.executable, me, "--worker", json.dumps(task)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"device_map_load: row {row} failed:\n{proc.stderr[-3000:]}")
                return 1
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            if out.get("no_reset"):
                print("device_map_load: skipped, VmHWM cannot be reset in the worker")
                return SKIP_STATUS
            results[row].append(out)
    print(f"device_map_load: {len(checkpoint)} tensors, {total / MB:.0f} MB in "
          f"{len(checkpoint.files())} shards (largest {largest / MB:.0f} MB); load {load_text()}")
    print(f"  plan: cpu {plan.used.get('cpu', 0) / MB:.0f} MB, disk "
          f"{plan.used.get('disk', 0) / MB:.0f} MB; {reps} repetition(s), medians")
    report, failed = {}, False
    for row in rows:
        peak = statistics.median(r["peak_delta"] for r in results[row])
        cpu = results[row][0]["cpu_bytes"]
        line = f"  {row:16s} peak {peak / MB:7.0f} MB  cpu tensors {cpu / MB:6.0f} MB"
        entry = {"peak_bytes": peak, "cpu_bytes": cpu,
                 "disk_tensors": results[row][0]["disk_tensors"]}
        if row != "plain":
            bound = cpu + largest + SLACK
            met = peak <= bound
            failed |= not met
            line += (f"  {(peak - cpu) / MB:+.0f} MB above them; bound (cpu + largest shard "
                     f"+ 64 MB) {bound / MB:.0f} MB: {'met' if met else 'NOT MET'}")
            entry.update(bound_bytes=bound, met=met)
        print(line)
        report[row] = entry
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"total_bytes": total, "largest_shard_bytes": largest, "rows": report}, f,
                      indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
