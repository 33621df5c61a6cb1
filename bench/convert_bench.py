#!/usr/bin/env python3
"""Benchmark: `safetensors convert` versus torch.load + save_file on a GPT-2-shaped checkpoint.

Makes a ~500 MB checkpoint with torch.save (124M F32 parameters in GPT-2's layout, lm_head
tied to the token embedding), then times in the same run, each in its own process with its
peak resident memory taken from wait4(2):
  (a) `safetensors convert gpt2.bin out.safetensors` (the command from BUILD_DIR);
  (b) torch.load + save_file: `libsafetensors.torch.save_file` when importable from the
      build tree, else a minimal pure-Python writer (JSON header + tensor.numpy().tobytes(),
      written tensor by tensor, which is kinder to the baseline's memory than the
      reference's save_file, which builds the whole file in memory).
Both deduplicate the tied weight. The file is read once first so both start from a warm
page cache, both outputs are deleted before each round (a conversion normally makes a new file)
and os.sync() runs before each measured run so neither pays for writing back the other's
output. Our time includes the fsync that makes the output crash-safe and the
verification pass; the baseline does neither. The baseline is timed twice: as a whole process,
and from inside, without the interpreter's start-up and `import torch`; the stricter inside
time is reported beside it. Targets: (a) at least 3x faster than (b) and at most a third of its
peak memory.

Usage: bench/convert_bench.py BUILD_DIR [--workdir DIR] [--repeat N]
Run it with a Python that has torch (Debian's python3-torch); torch.load runs under it too.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

MAKE_CHECKPOINT = r"""
import collections, sys, torch
torch.manual_seed(0)
sd = collections.OrderedDict()
def add(name, *shape):
    sd[name] = torch.randn(*shape) * 0.02
add("transformer.wte.weight", 50257, 768)
add("transformer.wpe.weight", 1024, 768)
for i in range(12):
    p = "transformer.h.%d." % i
    add(p + "ln_1.weight", 768); add(p + "ln_1.bias", 768)
    add(p + "attn.c_attn.weight", 768, 2304); add(p + "attn.c_attn.bias", 2304)
    add(p + "attn.c_proj.weight", 768, 768); add(p + "attn.c_proj.bias", 768)
    add(p + "ln_2.weight", 768); add(p + "ln_2.bias", 768)
    add(p + "mlp.c_fc.weight", 768, 3072); add(p + "mlp.c_fc.bias", 3072)
    add(p + "mlp.c_proj.weight", 3072, 768); add(p + "mlp.c_proj.bias", 768)
add("transformer.ln_f.weight", 768); add("transformer.ln_f.bias", 768)
sd["lm_head.weight"] = sd["transformer.wte.weight"]
torch.save(sd, sys.argv[1])
"""

BASELINE = r"""
import json, struct, sys, time, torch
src, dst, build, timing = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
sys.path.insert(0, build + "/python")
try:
    from libsafetensors.torch import save_file
except ImportError:
    save_file = None
start = time.perf_counter()
sd = torch.load(src, map_location="cpu")
if "state_dict" in sd:
    sd = sd["state_dict"]
# The reference converter's rule: of names sharing a storage, keep the first sorted.
seen, metadata = {}, {"format": "pt"}
for name in sorted(sd):
    key = (sd[name].untyped_storage().data_ptr() if hasattr(sd[name], "untyped_storage")
           else sd[name].storage().data_ptr())
    if key in seen:
        metadata[name] = seen[key]
    else:
        seen[key] = name
sd = {k: v.contiguous() for k, v in sd.items() if k not in metadata}
if save_file is not None:
    save_file(sd, dst, metadata=metadata)
    print("libsafetensors.torch.save_file")
else:
    names = sorted(sd, key=lambda k: (-sd[k].element_size(), k))
    header, offset = {"__metadata__": metadata}, 0
    for k in names:
        n = sd[k].numel() * sd[k].element_size()
        header[k] = {"dtype": "F32", "shape": list(sd[k].shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for k in names:
            f.write(sd[k].numpy().tobytes())
    print("pure-Python writer")
with open(timing, "w") as f:
    f.write(repr(time.perf_counter() - start))
"""


def run(argv):
    """Runs argv to completion; returns its stdout. For set-up steps (not measured)."""
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        sys.exit("%s failed:\n%s" % (argv[0], proc.stderr.decode(errors="replace")))
    return proc.stdout.decode()


def run_measured(argv):
    """Runs argv with wait4 so the peak RSS is this child's alone (Linux: ru_maxrss in KiB)."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.execv(argv[0], argv)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit("%s failed with status %d" % (" ".join(argv), os.waitstatus_to_exitcode(status)))
    return seconds, usage.ru_maxrss * 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("build_dir")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    command = os.path.join(os.path.abspath(args.build_dir), "tools", "safetensors")
    if not os.access(command, os.X_OK):
        sys.exit("convert_bench.py: %s not found; build the safetensors_cli target" % command)
    python = sys.executable
    workdir = args.workdir or tempfile.mkdtemp(prefix="convert-bench-")
    os.makedirs(workdir, exist_ok=True)
    source = os.path.join(workdir, "gpt2.bin")
    if not os.path.exists(source):
        print("making %s ..." % source, file=sys.stderr)
        run([python, "-c", MAKE_CHECKPOINT, source])
    size = os.path.getsize(source)
    with open(source, "rb") as f:  # warm the page cache for both contenders
        while f.read(1 << 24):
            pass

    ours_out = os.path.join(workdir, "ours.safetensors")
    base_out = os.path.join(workdir, "baseline.safetensors")
    timing = os.path.join(workdir, "baseline-seconds.txt")
    baseline = [python, "-c", BASELINE, source, base_out, os.path.abspath(args.build_dir), timing]
    writer = run(baseline)
    ours, base, base_inside = [], [], []
    for _ in range(args.repeat):
        # Each run starts with no dirty pages: otherwise one contender pays for writing back
        # the other's 500 MB (the kernel throttles writers above its dirty-page threshold).
        # A conversion normally makes a new file: neither side pays for deleting an old one.
        for path in (ours_out, base_out):
            if os.path.exists(path):
                os.remove(path)
        os.sync()
        ours.append(run_measured([command, "convert", source, ours_out]))
        os.sync()
        base.append(run_measured(baseline))
        with open(timing) as f:
            base_inside.append(float(f.read()))
    t_ours = statistics.median(t for t, _ in ours)
    t_base = statistics.median(t for t, _ in base)
    t_inside = statistics.median(base_inside)
    m_ours = max(m for _, m in ours)
    m_base = max(m for _, m in base)

    print()
    print("Checkpoint: %s, %.1f MB (GPT-2 124M, F32, lm_head tied)" % (source, size / 1e6))
    print("| | safetensors convert | torch.load + save_file (%s) | ratio |" % writer.strip())
    print("|---|---:|---:|---:|")
    print("| time (median of %d) | %.2f s | %.2f s | %.1fx faster |" % (
        args.repeat, t_ours, t_base, t_base / t_ours))
    print("| time without Python start-up and `import torch` | %.2f s | %.2f s | %.1fx faster |" % (
        t_ours, t_inside, t_inside / t_ours))
    print("| peak RSS | %.0f MB | %.0f MB | %.2f of it |" % (
        m_ours / 1e6, m_base / 1e6, m_ours / m_base))
    ok_time = t_base / t_ours >= 3
    ok_inside = t_inside / t_ours >= 3
    ok_mem = m_ours * 3 <= m_base
    print("targets: >= 3x faster end to end: %s; >= 3x against the baseline's in-process time "
          "(stricter): %s; <= 1/3 peak memory: %s" % (
              "met" if ok_time else "NOT met", "met" if ok_inside else "NOT met",
              "met" if ok_mem else "NOT met"))
    if not args.workdir:
        for path in (source, ours_out, base_out, timing):
            os.remove(path)
        os.rmdir(workdir)


if __name__ == "__main__":
    main()
