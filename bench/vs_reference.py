#!/usr/bin/env python3
"""libsafetensors against the real reference `safetensors` (0.8) and torch 2, in one run.

    PYTHONPATH=build/python .venv/bin/python bench/vs_reference.py [--quick] [--reps N]

Every measurement runs in a fresh Python process (imports, allocator and mappings start
clean), and the implementations alternate within each repetition (their order rotates from
one repetition to the next), so a busy neighbour on the machine hurts all of them alike.
Medians over the repetitions are reported with the ratio ours/peer (below 1: ours is faster).
Nothing here asserts an absolute time: the script only fails when a row could not be
measured. The page cache is warm for every row (each input is read once before), and
os.sync() runs before each measured process so no one pays for another's writeback.

Rows:
- `load_file` of a GPT-2-shaped F32 state dict (about 500 MB, torch flavour): "lazy" times
  the call alone, as the reference's own benchmark does (a mapped file, no page read);
  "materialized" also reads one byte of every 4 KiB page of every tensor. Peers: the
  reference's `load_file`, `torch.load` of the same tensors saved with `torch.save`, and
  `torch.load(mmap=True)`. In-process time after one untimed warm-up load.
- `save_file` of that state dict: ours, the reference's, `torch.save`; the time of the call,
  and the call plus an fsync of the output (ours already fsyncs inside the call).
- `safe_open` of a file of 200,000 small tensors, then `keys()`: in-process (after one
  warm-up open), and as whole processes: `safetensors validate` (our CLI) and `python -c` of
  each package's safe_open + keys. `safetensors validate` is also timed against the
  reference Rust crate itself (the core of the same safetensors 0.8.0) in a native program,
  `st_validate`, which maps the file and calls `SafeTensors::deserialize` (the crate's full,
  validating open): built by bench/rust_peer/build.sh, found through SAFETENSORS_RUST_PEER
  or at that script's default output; without it the row says why it was not measured.
- conversion of the same state dict saved by `torch.save` (a .bin): `safetensors convert`
  against `python -c` of `torch.load` + the reference `save_file`, whole processes, with
  their peak RSS.

Needs the reference safetensors and torch >= 2.1 (for `torch.load(mmap=True)`); without
them it prints every row as skipped and exits with status 77 (ctest's skip code).
"""
import argparse
import importlib.util
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

from bench_common import (SKIP_STATUS, argument_parser, load_text, missing_peers, rotated,
                          run_process, touch)
from model_shapes import gpt2_shapes


# --------------------------------------------------------------------------- the workers
# A worker is this file run with `--worker JSON`: it imports only what its task needs, times
# it and prints {"seconds": ...} (plus extras) as its last line.

def worker(task):
    kind, impl = task["kind"], task["impl"]
    out = {}
    if kind == "load":
        import torch
        if impl == "ours":
            from libsafetensors.torch import load_file
            load = lambda: load_file(task["st"])  # noqa: E731
        elif impl == "reference":
            from safetensors.torch import load_file
            load = lambda: load_file(task["st"])  # noqa: E731
        elif impl == "torch":
            load = lambda: torch.load(task["pt"], weights_only=True)  # noqa: E731
        else:
            load = lambda: torch.load(task["pt"], weights_only=True, mmap=True)  # noqa: E731
        materialize = task["mode"] == "materialized"
        sd = load()  # warm-up: lazy imports, first-call paths
        if materialize:
            touch(sd)
        del sd
        start = time.perf_counter()
        sd = load()
        if materialize:
            touch(sd)
        out["seconds"] = time.perf_counter() - start
        out["tensors"] = len(sd)
    elif kind == "save":
        import torch
        if impl == "ours":
            from libsafetensors.torch import save_file
        elif impl == "reference":
            from safetensors.torch import save_file
        else:
            save_file = lambda sd, path: torch.save(sd, path)  # noqa: E731
        sd = torch.load(task["pt"], weights_only=True)
        warm = task["dst"] + ".warm"
        save_file({"x": torch.zeros(4)}, warm)
        os.unlink(warm)
        start = time.perf_counter()
        save_file(sd, task["dst"])
        out["seconds"] = time.perf_counter() - start
        fd = os.open(task["dst"], os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        out["with_fsync"] = time.perf_counter() - start
    elif kind == "open":
        if impl == "ours":
            from libsafetensors import safe_open
        else:
            from safetensors import safe_open

        def open_keys():
            with safe_open(task["path"], framework="np") as f:
                return len(f.keys())
        open_keys()
        start = time.perf_counter()
        n = open_keys()
        out["seconds"] = time.perf_counter() - start
        out["tensors"] = n
    else:
        raise SystemExit("unknown task %r" % kind)
    print(json.dumps(out))


# The whole-process baselines, run as `python -c`.
OPEN_KEYS = ("import sys\nfrom {module} import safe_open\n"
             "with safe_open(sys.argv[1], framework='np') as f:\n    n = len(f.keys())\n"
             "assert n == int(sys.argv[2])\n")
CONVERT_BASELINE = ("import sys, torch\nfrom safetensors.torch import save_file\n"
                    "sd = torch.load(sys.argv[1], map_location='cpu', weights_only=True)\n"
                    "save_file(sd, sys.argv[2], metadata={'format': 'pt'})\n")


# --------------------------------------------------------------------------- the inputs

def gpt2_shapes_for(quick):
    return gpt2_shapes(layers=2, d=64, vocab=1000, positions=128) if quick else gpt2_shapes()


def write_safetensors(path, entries, metadata=None):
    """A plain writer, independent of both packages: entries are (name, dtype, shape, bytes)."""
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for entry in entries:
            f.write(entry[3])


def make_inputs(scratch, quick, many):
    import torch
    torch.manual_seed(0)
    sd = {name: torch.randn(shape) for name, shape in gpt2_shapes_for(quick).items()}
    paths = {"st": os.path.join(scratch, "gpt2.safetensors"),
             "pt": os.path.join(scratch, "gpt2.bin"),
             "many": os.path.join(scratch, "many.safetensors")}
    write_safetensors(paths["st"], [(k, "F32", list(t.shape), t.numpy().tobytes())
                                    for k, t in sd.items()], {"format": "pt"})
    torch.save(sd, paths["pt"])  # the zip format: a transformers pytorch_model.bin
    nbytes = sum(t.numel() * 4 for t in sd.values())
    ntensors = len(sd)
    del sd
    layer = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
             "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
             "mlp.down_proj.weight", "input_layernorm.weight")
    f16, f32 = bytes(8), bytes(16)
    entries = []
    for i in range(many // len(layer)):
        for name in layer:
            norm = name.endswith("layernorm.weight")
            entries.append(("model.layers.%d.%s" % (i, name), "F32" if norm else "F16", [4],
                            f32 if norm else f16))
    write_safetensors(paths["many"], entries, {"format": "pt"})
    return paths, nbytes, ntensors, len(entries)


# --------------------------------------------------------------------------- running

def run_measured(argv, env, scratch):
    """Runs argv; returns (wall seconds, peak RSS bytes). The peak is measured by GNU time,
    a small process: a child forked from this one would be charged this process's RSS (Linux
    keeps the high-water mark of the memory an exec replaces)."""
    report = os.path.join(scratch, "rss.txt")
    if os.access("/usr/bin/time", os.X_OK):
        seconds, _ = run_process(["/usr/bin/time", "-f", "%M", "-o", report] + argv, env)
        with open(report) as f:
            kib = int(f.read().split()[-1])
        os.unlink(report)
        return seconds, kib * 1024
    os.sync()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("%s failed with status %d" % (" ".join(argv[:4]),
                                                         os.waitstatus_to_exitcode(status)))
    return seconds, usage.ru_maxrss * 1024  # an upper bound: includes this process's RSS


RUST_PEER_DEFAULT = "/tmp/rust-peer-build/st_validate"  # bench/rust_peer/build.sh's output


def find_rust_peer():
    """(path, None) for the native reference-crate peer, or (None, why it is not there)."""
    path = os.environ.get("SAFETENSORS_RUST_PEER")
    if path:
        if os.access(path, os.X_OK):
            return os.path.abspath(path), None
        return None, "SAFETENSORS_RUST_PEER=%s is not an executable" % path
    if os.access(RUST_PEER_DEFAULT, os.X_OK):
        return RUST_PEER_DEFAULT, None
    return None, ("no st_validate: build it with bench/rust_peer/build.sh, or set "
                  "SAFETENSORS_RUST_PEER")


def find_cli(args):
    if args.cli:
        return args.cli
    spec = importlib.util.find_spec("libsafetensors")
    if spec and spec.origin:
        build = os.path.dirname(os.path.dirname(os.path.dirname(spec.origin)))
        candidate = os.path.join(build, "tools", "safetensors")
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("safetensors")
    if found:
        return found
    raise SystemExit("vs_reference.py: our `safetensors` command was not found; pass --cli")


LOAD_PEERS = (("reference", "reference `load_file`"), ("torch", "`torch.load`"),
              ("torch_mmap", "`torch.load(mmap=True)`"))
SAVE_PEERS = (("reference", "reference `save_file`"), ("torch", "`torch.save`"))


def planned_rows():
    """Every row the report must have: (key, label)."""
    rows = []
    for mode in ("lazy", "materialized"):
        for peer, label in LOAD_PEERS:
            rows.append((("load", mode, peer), "`load_file`, %s, vs %s" % (mode, label)))
    for variant in ("call", "with_fsync"):
        for peer, label in SAVE_PEERS:
            fsync = "" if variant == "call" else " + fsync"
            rows.append((("save", variant, peer), "`save_file`%s vs %s%s" % (fsync, label, fsync)))
    rows.append((("open", "inproc", "reference"), "`safe_open` + `keys()`, in process"))
    rows.append((("open", "process", "reference"),
                 "`safetensors validate` vs `python -c` reference safe_open, whole process"))
    rows.append((("open", "process_rust", "rust_peer"),
                 "`safetensors validate` vs reference Rust crate, native binary, whole process"))
    rows.append((("open", "process_rust_cpu", "rust_peer"),
                 "... the same, CPU time (user + system)"))
    rows.append((("open", "process_py", "reference"),
                 "`python -c` ours vs reference safe_open + keys, whole process"))
    rows.append((("convert", "time", "reference"),
                 "`safetensors convert` vs `torch.load` + reference `save_file`, whole process"))
    rows.append((("convert", "rss", "reference"), "... peak RSS (MB)"))
    return rows


def main():
    parser = argument_parser(__doc__, "small inputs and one repetition: checks that every row "
                             "runs")
    parser.add_argument("--tensors", type=int, default=None,
                        help="tensors in the safe_open file (default 200,000, --quick 2,000)")
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--cli", default=None, help="our `safetensors` command")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))

    reps = args.reps or (1 if args.quick else 5)
    many = args.tensors or (2000 if args.quick else 200000)
    why = missing_peers()
    if why:
        print("SKIPPED [vs_reference.py]: %s (%s)" % (why, sys.executable))
        for _, label in planned_rows():
            print("| %s | skipped |" % label)
        return SKIP_STATUS
    if importlib.util.find_spec("libsafetensors") is None:
        raise SystemExit("vs_reference.py: libsafetensors is not importable "
                         "(set PYTHONPATH=BUILD/python)")
    cli = find_cli(args)
    rust_peer, rust_peer_why = find_rust_peer()
    import torch
    import safetensors
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    me = os.path.abspath(__file__)
    py = sys.executable

    def python_worker(**task):
        _, stdout = run_process([py, me, "--worker", json.dumps(task)], env)
        return json.loads(stdout.strip().splitlines()[-1])

    scratch_owner = None
    if args.dir:
        scratch = args.dir
        os.makedirs(scratch, exist_ok=True)
    else:
        scratch_owner = tempfile.TemporaryDirectory(prefix="vs-reference-")
        scratch = scratch_owner.name
    started = time.time()
    load_at_start = load_text()
    paths, nbytes, ntensors, nmany = make_inputs(scratch, args.quick, many)
    for path in paths.values():  # warm the page cache
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    print("libsafetensors vs safetensors %s and torch %s (%s), %d repetition(s), %d CPUs" %
          (safetensors.__version__, torch.__version__, py, reps, os.cpu_count()), flush=True)
    print("state dict: %d F32 tensors, %.1f MB; safe_open file: %d tensors, %.1f MB" %
          (ntensors, nbytes / 1e6, nmany, os.path.getsize(paths["many"]) / 1e6), flush=True)
    print("reference Rust crate, native binary: %s" % (rust_peer or "not measured, " +
                                                       rust_peer_why), flush=True)

    samples = {}  # (section, variant, impl) -> [seconds...]

    def add(key, value):
        samples.setdefault(key, []).append(value)

    out_path = os.path.join(scratch, "out.safetensors")
    for rep in range(reps):
        # load_file: lazy, then materialized.
        for mode in ("lazy", "materialized"):
            for impl in rotated(("ours", "reference", "torch", "torch_mmap"), rep):
                r = python_worker(kind="load", impl=impl, mode=mode, st=paths["st"],
                                  pt=paths["pt"])
                assert r["tensors"] == ntensors, r
                add(("load", mode, impl), r["seconds"])
        # save_file.
        for impl in rotated(("ours", "reference", "torch"), rep):
            r = python_worker(kind="save", impl=impl, pt=paths["pt"], dst=out_path)
            os.unlink(out_path)
            add(("save", "call", impl), r["seconds"])
            add(("save", "with_fsync", impl), r["with_fsync"])
        # safe_open of many tensors: in process, then whole processes.
        for impl in rotated(("ours", "reference"), rep):
            r = python_worker(kind="open", impl=impl, path=paths["many"])
            assert r["tensors"] == nmany, r
            add(("open", "inproc", impl), r["seconds"])
        whole = {"cli": [cli, "validate", "-q", paths["many"]],
                 "ours_py": [py, "-c", OPEN_KEYS.format(module="libsafetensors"), paths["many"],
                             str(nmany)],
                 "reference_py": [py, "-c", OPEN_KEYS.format(module="safetensors"),
                                  paths["many"], str(nmany)]}
        if rust_peer:
            whole["rust_peer"] = [rust_peer, paths["many"]]
        for impl in rotated(whole, rep):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            seconds, stdout = run_process(whole[impl], env)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if impl == "rust_peer":  # it prints the number of tensors
                assert int(stdout.split()[-1]) == nmany, stdout
            add(("open", "whole", impl), seconds)
            add(("open", "whole_cpu", impl), after.ru_utime - before.ru_utime
                + after.ru_stime - before.ru_stime)
        # Conversion of the .bin.
        convert = {"ours": [cli, "convert", paths["pt"], out_path],
                   "reference": [py, "-c", CONVERT_BASELINE, paths["pt"], out_path]}
        for impl in rotated(convert, rep):
            seconds, rss = run_measured(convert[impl], env, scratch)
            os.unlink(out_path)
            add(("convert", "time", impl), seconds)
            add(("convert", "rss", impl), rss / 1e6)
        print("repetition %d/%d done (load average %s)" % (rep + 1, reps, load_text()),
              flush=True)

    def med(key):
        return statistics.median(samples[key])

    table = []
    for key, label in planned_rows():
        section, variant, peer = key
        if section == "open" and variant in ("process_rust", "process_rust_cpu"):
            if not rust_peer:
                table.append((label, rust_peer_why))
                continue
            measure = "whole" if variant == "process_rust" else "whole_cpu"
            ours, theirs = ("open", measure, "cli"), ("open", measure, "rust_peer")
        elif section == "open" and variant == "process":
            ours, theirs = ("open", "whole", "cli"), ("open", "whole", "reference_py")
        elif section == "open" and variant == "process_py":
            ours, theirs = ("open", "whole", "ours_py"), ("open", "whole", "reference_py")
        else:
            ours, theirs = (section, variant, "ours"), (section, variant, peer)
        # The ratio in each repetition: ours and the peer ran next to each other.
        each = [a / b for a, b in zip(samples[ours], samples[theirs])]
        table.append((label, med(ours), med(theirs), min(each), max(each)))

    print()
    print("| | ours | peer | ours/peer | per repetition |")
    print("|---|---:|---:|---:|---:|")
    for row in table:
        if len(row) == 2:
            print("| %s | not measured: %s |" % row)
            continue
        label, ours, theirs, low, high = row
        fmt = "%.0f" if label.startswith("... peak RSS") else "%.4f"
        print("| %s | %s | %s | %.2f | %.2f–%.2f |" % (label, fmt % ours, fmt % theirs,
                                                       ours / theirs, low, high))
    print()
    print("Seconds (RSS in MB), medians of %d; ours/peer below 1 means ours is faster; the last "
          "column is the range of the ratio within each repetition." % reps)
    print("Load average (1, 5, 15 min) at start: %s, at end: %s; %.0f s in all." %
          (load_at_start, load_text(), time.time() - started))
    if scratch_owner:
        scratch_owner.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
