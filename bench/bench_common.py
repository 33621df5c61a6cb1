"""Helpers shared by the Python benchmarks (bench/vs_reference.py, bench/cold_load.py)."""
import importlib.util
import os
import subprocess
import time

SKIP_STATUS = 77  # ctest's SKIP_RETURN_CODE


def touch(tensors):
    """Reads one byte of every 4 KiB page of every tensor; returns their sum (a checksum)."""
    import torch
    total = 0
    for t in tensors.values():
        if t.numel():
            total += int(t.reshape(-1).view(torch.uint8)[::4096].sum())
    return total


def run_process(argv, env):
    """Runs argv after an os.sync(); returns (wall seconds, stdout). Fails loudly."""
    os.sync()
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s" % (" ".join(argv[:4]), proc.returncode,
                                                     stderr.decode(errors="replace")[-3000:]))
    return seconds, stdout.decode()


def missing_peers():
    """Why a comparison with the reference package and torch cannot run here, or None."""
    if importlib.util.find_spec("safetensors") is None:
        return "the reference safetensors package is not installed"
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    import torch
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    if (major, minor) < (2, 1):
        return "torch %s is older than 2.1 (no torch.load(mmap=True))" % torch.__version__
    return None


def load_text():
    one, five, fifteen = os.getloadavg()
    return "%.2f %.2f %.2f" % (one, five, fifteen)


def rotated(items, rep):
    """items, rotated by rep: each repetition starts with a different implementation."""
    items = list(items)
    k = rep % len(items) if items else 0
    return items[k:] + items[:k]


def argument_parser(doc, quick_help):
    """The options every benchmark here takes: --quick (a smoke run) and --reps."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--reps", type=int, default=None,
                        help="repetitions (default 5, --quick 1)")
    return parser


def status_kib(field):
    """A field of /proc/self/status in KiB (VmRSS, VmHWM, ...)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError("no %s in /proc/self/status" % field)


def reset_peak():
    """Resets VmHWM to the current resident set (Linux >= 4.0); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
