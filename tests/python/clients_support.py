"""Starts clients_worker.py in fresh interpreters for test_clients_*.py (see that file)."""

import os
import subprocess
import sys
import time

import libsafetensors
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "clients_worker.py")
# The directory libsafetensors is imported from (the build tree's python/ under ctest).
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(libsafetensors.__file__)))
# The spy's counts of a side that never called our package.
NO_CALLS = {"safe_open": 0, "serialize_file": 0, "load_file": 0, "load": 0}


def worker_env(tmp, extra=None):
    """The tests' environment without the alias package (which would make `import
    safetensors` ours on every side), offline, with a private Hugging Face cache."""
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_PARENT
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env["HF_HOME"] = os.path.join(tmp, "hf-home")
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra or {})
    return env


def run_workers(flows, modes, tmp, extra_env=None, timeout=240):
    """{mode: the worker's result dict}, the workers run side by side."""
    started = {}
    for mode in modes:
        out = os.path.join(str(tmp), f"{flows}-{mode}")
        os.makedirs(out, exist_ok=True)
        log = open(os.path.join(out, "log.txt"), "w+")
        process = subprocess.Popen([sys.executable, WORKER, flows, mode, out], cwd=out,
                                   env=worker_env(out, extra_env), stdout=log,
                                   stderr=subprocess.STDOUT)
        started[mode] = (process, out, log)
    deadline = time.monotonic() + timeout
    results = {}
    failures = []
    for mode, (process, out, log) in started.items():
        try:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.seek(0)
        text = log.read()
        log.close()
        if process.returncode != 0:
            failures.append(f"--- {flows} worker, mode {mode}, exit {process.returncode}:\n"
                            f"{text[-6000:]}")
            continue
        results[mode] = torch.load(os.path.join(out, "result.pt"), weights_only=False)
    if failures:
        raise AssertionError("\n".join(failures))
    return results


def assert_each_side_used_its_package(runs):
    """The reference side never touched libsafetensors; our side ran through it."""
    reference, ours = runs["reference"], runs["ours"]
    assert not reference["libsafetensors_imported"]
    assert reference["calls"] == NO_CALLS
    assert os.path.basename(os.path.dirname(reference["safetensors_file"])) == "safetensors"
    assert ours["safetensors_file"] == libsafetensors.__file__
    return ours


def assert_same_state_dicts(ours, reference):
    assert ours.keys() == reference.keys()
    for flow, state in reference.items():
        assert ours[flow].keys() == state.keys(), flow
        for key, tensor in state.items():
            got = ours[flow][key]
            assert got.dtype == tensor.dtype and got.shape == tensor.shape, (flow, key)
            assert torch.equal(got.view(-1).view(torch.uint8) if got.numel() else got,
                               tensor.view(-1).view(torch.uint8) if tensor.numel() else tensor), \
                (flow, key)
