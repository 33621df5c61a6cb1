#!/usr/bin/env python3
"""The `safetensors` command on hostile inputs: special files, huge headers, huge sparse
files, and a writer killed mid-save.

Usage: robustness_test.py SAFETENSORS_BIN SCRATCH_DIR GROUP
GROUP is `special`, `verdict`, `memory`, `kill` or `sparse` (the last needs a file system that keeps
sparse files; ctest labels it `sparse`).
"""

import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1]
SCRATCH_ROOT = sys.argv[2]
GROUP = sys.argv[3]

failures = []


def check(name, condition, detail=""):
    if not condition:
        failures.append(name)
        print(f"FAIL: {name}" + (f"\n  {detail}" if detail else ""))


def run(*args, timeout=30):
    """Runs the command; a hang is a failure, not a stuck test run."""
    try:
        return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def write_file(path, header, data=b""):
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((-(8 + len(text))) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)
    return 8 + len(text)


def small_file(path):
    write_file(path, {"w": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, b"ab")


# ---------------------------------------------------------------- special files

def check_special(scratch):
    """Every subcommand refuses a FIFO (which blocked open(2) forever) promptly, naming it."""
    fifo = os.path.join(scratch, "pipe.safetensors")
    os.mkfifo(fifo)
    index_fifo = os.path.join(scratch, "model.safetensors.index.json")
    os.mkfifo(index_fifo)
    out = os.path.join(scratch, "out.safetensors")
    cases = {
        "inspect": ["inspect", fifo],
        "inspect index": ["inspect", index_fifo],
        "validate": ["validate", fifo],
        "validate directory with a FIFO index": ["validate", scratch],
        "merge": ["merge", fifo, "-o", out],
        "get": ["get", fifo, "w"],
        "shard": ["shard", fifo, "-o", os.path.join(scratch, "shards")],
        "scan": ["scan", fifo],
        "convert": ["convert", fifo, out],
        "cast": ["cast", fifo, out, "--dtype", "f16"],
        "bench": ["bench", fifo, "--no-cold", "--repeat", "1"],
    }
    for name, args in cases.items():
        start = time.monotonic()
        result = run(*args, timeout=20)
        if result is None:
            check(f"{name} on a FIFO returns", False, "timed out")
            continue
        took = time.monotonic() - start
        message = result.stdout + result.stderr
        # scan reports an unreadable file with its own status.
        expected = 2 if name == "scan" else 1
        check(f"{name} on a FIFO fails", result.returncode == expected,
              f"exit {result.returncode}: {message}")
        check(f"{name} on a FIFO says what it is", "FIFO" in message and "not a regular file"
              in message and ("pipe.safetensors" in message or "index.json" in message), message)
        check(f"{name} on a FIFO is prompt", took < 10, f"{took:.1f} s")
    check("nothing was written", not os.path.exists(out))
    result = run("validate", "/dev/null")
    check("validate /dev/null: a character device", result is not None and result.returncode == 1
          and "character device" in result.stderr, result and result.stderr)


# ---------------------------------------------------------------- one verdict

def check_verdict(scratch):
    """NUL in a name or metadata: refused by every subcommand, as safe_open refuses it."""
    out = os.path.join(scratch, "out.safetensors")
    entry = {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}
    for label, header in [("name", {"w\0x": entry}),
                          ("metadata key", {"__metadata__": {"k\0": "v"}, "w": entry}),
                          ("metadata value", {"__metadata__": {"k": "\0v"}, "w": entry})]:
        path = os.path.join(scratch, "nul.safetensors")
        write_file(path, header, b"x")
        result = run("validate", path)
        check(f"validate refuses NUL in a {label}", result.returncode == 1
              and "nul_character" in result.stderr, result.stderr)
        for args in (["inspect", path], ["merge", path, "-o", out], ["get", path, "w"],
                     ["cast", path, out, "--dtype", "f16"]):
            result = run(*args)
            check(f"{args[0]} refuses NUL in a {label}", result.returncode == 1
                  and "null byte" in result.stderr, result.stderr)
    check("nothing was written", not os.path.exists(out))


# ---------------------------------------------------------------- memory

def peak_rss(*args):
    """Peak resident memory of one run of the command, in bytes, with its exit status."""
    probe = ("import resource, subprocess, sys\n"
             "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL,"
             " stderr=subprocess.PIPE)\n"
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
             "sys.stderr.write(r.stderr.decode(errors='replace'))\n")
    result = subprocess.run([sys.executable, "-c", probe, BIN, *args], capture_output=True,
                            text=True, timeout=300)
    status, kib = result.stdout.split()
    return int(status), int(kib) * 1024, result.stderr


def check_memory(scratch):
    """Opening, inspecting, validating and merging any file stays within 10x its header
    plus a constant (the program itself, its allocator's arenas)."""
    constant = 64 << 20
    # One tensor of rank 16,000,000 (32 MB): validate peaked at 462 MB.
    ranked = os.path.join(scratch, "rank.safetensors")
    shape = ",".join(["1"] * 16_000_000)
    header = f'{{"w":{{"dtype":"U8","shape":[{shape}],"data_offsets":[0,1]}}}}'.encode()
    header += b" " * ((-(8 + len(header))) % 8)
    with open(ranked, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + b"x")
    # 1,000,000 metadata keys (15 MB): merge peaked at 667 MB.
    keyed = os.path.join(scratch, "keys.safetensors")
    metadata = {f"key{i:07d}": "v" for i in range(1_000_000)}
    keyed_header = write_file(keyed, {"__metadata__": metadata,
                                      "w": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}},
                              b"ab")
    # 100,000 tensors of rank 64 (19 MB), the most dimensions allowed.
    deep = os.path.join(scratch, "deep.safetensors")
    deep_header = write_file(deep, {f"{i:x}": {"dtype": "U8", "shape": [1] * 64,
                                               "data_offsets": [i, i + 1]}
                                    for i in range(100_000)}, b"x" * 100_000)
    # 400,000 scalars with the shortest entries (26 MB): the most tensors per header byte.
    many = os.path.join(scratch, "many.safetensors")
    many_header = write_file(many, {f"{i:x}": {"dtype": "U8", "shape": [],
                                               "data_offsets": [i, i + 1]}
                                    for i in range(400_000)}, b"x" * 400_000)
    merged = os.path.join(scratch, "merged.safetensors")
    for label, path, size, args, status in [
            ("inspect many", many, many_header, ["inspect", many], 0),
            ("merge many", many, many_header, ["merge", many, "-o", merged], 0),
            ("validate deep", deep, deep_header, ["validate", deep], 0),
            ("inspect deep", deep, deep_header, ["inspect", deep], 0),
            ("merge deep", deep, deep_header, ["merge", deep, "-o", merged], 0),
            ("validate rank", ranked, len(header), ["validate", ranked], 1),
            ("inspect rank", ranked, len(header), ["inspect", ranked], 1),
            ("merge rank", ranked, len(header), ["merge", ranked, "-o", merged], 1),
            ("validate keys", keyed, keyed_header, ["validate", keyed], 0),
            ("inspect keys", keyed, keyed_header, ["inspect", keyed], 0),
            ("inspect --json keys", keyed, keyed_header, ["inspect", "--json", keyed], 0),
            ("merge keys", keyed, keyed_header, ["merge", keyed, "-o", merged], 0)]:
        got_status, peak, err = peak_rss(*args)
        limit = 10 * size + constant
        print(f"{label}: header {size / 1e6:.1f} MB, peak {peak / 1e6:.1f} MB")
        check(f"{label}: exit {status}", got_status == status, err[-500:])
        check(f"{label}: peak {peak / 1e6:.0f} MB under {limit / 1e6:.0f} MB", peak < limit)
    check("the rank limit is named", "too_many_dimensions" in
          run("validate", ranked).stderr)


# ---------------------------------------------------------------- kill

def check_kill(scratch):
    """A writer SIGKILLed mid-save leaves its temporary; the next save removes it."""
    source = os.path.join(scratch, "big.safetensors")
    size = 256 << 20
    write_file(source, {"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}})
    with open(source, "r+b") as f:
        f.truncate(os.path.getsize(source) + size)
    target = os.path.join(scratch, "target.safetensors")
    small_file(target)
    before = open(target, "rb").read()
    prefix = ".target.safetensors.tmp-"
    temporaries = lambda: [n for n in os.listdir(scratch) if n.startswith(prefix)]
    # Killed once its temporary holds some data, before the rename.
    child = subprocess.Popen([BIN, "merge", source, "-o", target], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        names = temporaries()
        if names and os.path.getsize(os.path.join(scratch, names[0])) > (1 << 20):
            break
        time.sleep(0.001)
    child.send_signal(signal.SIGKILL)
    child.wait()
    left = temporaries()
    check("the killed writer left its temporary", len(left) == 1, left)
    check("the target is intact", open(target, "rb").read() == before)
    little = os.path.join(scratch, "little.safetensors")
    small_file(little)
    result = run("merge", little, "-o", target)
    check("the next save succeeds", result is not None and result.returncode == 0,
          result and result.stderr)
    check("the next save removed the leftover", temporaries() == [], temporaries())


# ---------------------------------------------------------------- sparse

HUGE_FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures",
                            "sparse", "make_huge.py")


def check_sparse(scratch):
    """A file larger than RAM + swap opens lazily."""
    path = os.path.join(scratch, "huge.safetensors")
    made = subprocess.run([sys.executable, HUGE_FIXTURE, path], capture_output=True, text=True)
    if made.returncode == 3:
        print("SKIP:", made.stderr.strip())
        return
    check("the huge file is made", made.returncode == 0, made.stderr)
    try:
        for args in (["validate", path], ["inspect", path], ["get", path, "huge", "-n", "4"]):
            result = run(*args, timeout=120)
            check(f"{args[0]} of a file larger than memory", result is not None
                  and result.returncode == 0, result and result.stderr)
    finally:
        os.remove(path)


def main():
    os.makedirs(SCRATCH_ROOT, exist_ok=True)
    group = {"special": check_special, "verdict": check_verdict, "memory": check_memory,
             "kill": check_kill, "sparse": check_sparse}[GROUP]
    with tempfile.TemporaryDirectory(dir=SCRATCH_ROOT) as scratch:
        group(scratch)
    print(f"{GROUP}: {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
