"""Behaviour of the reference's release 0.8 that our package follows: the OS error types when
opening, and `safe_open.prefetch`; and NUL characters refused in names and metadata, which 0.8
accepts (a deliberate difference, docs/FORMAT.md; test_differential_*.py check it against 0.8)."""

import ctypes
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from libsafetensors import Checkpoint, SafetensorError, safe_open, serialize
from libsafetensors.numpy import load, save, save_file
from libsafetensors.torch import save_file as save_file_pt


def raw_file(header):
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"\0" * 8


@pytest.mark.parametrize("name", ["\0", "\0lead", "trail\0", "mid\0dle"])
def test_writing_refuses_nul_in_tensor_names(path, name):
    tensors = {"fine": np.arange(3, dtype=np.int16), name: np.ones(2, dtype=np.int16)}
    for write in (lambda: save(tensors), lambda: save_file(tensors, path)):
        with pytest.raises(SafetensorError, match="contains a null byte") as error:
            write()
        assert "\\x00" in str(error.value)  # the name is shown, its NUL visible
    assert not os.path.exists(path)


@pytest.mark.parametrize("metadata", [{"fo\0o": "v"}, {"key": "val\0ue"}])
def test_writing_refuses_nul_in_metadata(path, metadata):
    with pytest.raises(SafetensorError, match="null byte"):
        save_file({"x": np.zeros(1, dtype=np.float32)}, path, metadata=metadata)
    with pytest.raises(SafetensorError, match="null byte"):
        serialize({"x": {"dtype": "F32", "shape": [1], "data": b"\0" * 4}}, metadata=metadata)


NUL_HEADERS = [
    {"w\0x": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}},
    {"__metadata__": {"k\0": "v"}, "w": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}},
    {"__metadata__": {"k": "\0v"}, "w": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}},
]


@pytest.mark.parametrize("header", NUL_HEADERS)
def test_reading_refuses_nul_in_names_and_metadata(path, header):
    blob = raw_file(header)
    with pytest.raises(SafetensorError, match="null byte"):
        load(blob)
    with open(path, "wb") as f:
        f.write(blob)
    for backend in ("mmap", "pread"):
        with pytest.raises(SafetensorError, match="null byte") as error:
            safe_open(path, framework="np", backend=backend)
        assert path in str(error.value)


@pytest.mark.parametrize("header", NUL_HEADERS)
def test_checkpoint_refuses_nul_in_any_shard(tmp_path, header):
    # A directory of two shards, the second one with a NUL in a name or in its metadata.
    (tmp_path / "a.safetensors").write_bytes(
        raw_file({"ok": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}))
    (tmp_path / "b.safetensors").write_bytes(raw_file(header))
    weight_map = {"ok": "a.safetensors"}
    weight_map.update((name, "b.safetensors") for name in header if name != "__metadata__")
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 16}, "weight_map": weight_map}))
    with pytest.raises(SafetensorError) as error:
        Checkpoint(str(tmp_path))
    assert "\\x00" in str(error.value)


def test_missing_file_message(tmp_path):
    missing = str(tmp_path / "nowhere" / "w.safetensors")
    with pytest.raises(FileNotFoundError) as error:
        safe_open(missing, framework="np")
    assert str(error.value) == f"No such file or directory: {missing}"


UNREADABLE = """
import sys
from libsafetensors import safe_open
try:
    safe_open(sys.argv[1], framework="np")
except PermissionError as error:
    print("PermissionError", error)
except Exception as error:
    print(type(error).__name__, error)
"""


def drop_file_read_override():
    """Runs in the child before exec: takes CAP_DAC_OVERRIDE (1) and CAP_DAC_READ_SEARCH (2)
    out of the bounding set, so root's program after exec is refused mode-0 files like anyone
    else, while it can still run an interpreter that only root may read (a pyenv in /root)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_unreadable_file_raises_permission_error(tmp_path):
    path = tmp_path / "locked.safetensors"
    save_file({"x": np.zeros(2, dtype=np.uint8)}, str(path))
    path.chmod(0)
    tmp_path.chmod(0o755)
    command = [sys.executable, "-c", UNREADABLE, str(path)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    if os.geteuid() == 0:  # root reads anything: ask without the capabilities that allow it
        run = subprocess.run(command, env=env, capture_output=True, text=True, cwd="/",
                             preexec_fn=drop_file_read_override)
    else:
        run = subprocess.run(command, env=env, capture_output=True, text=True)
    if "ModuleNotFoundError" in run.stderr or "ImportError" in run.stderr:
        pytest.skip("libsafetensors cannot be imported by the unprivileged user")
    assert run.stdout.strip() == f"PermissionError Permission denied: {path}", run.stderr


@pytest.fixture
def three(path):
    tensors = {"a": torch.zeros(4, 8), "b": torch.ones(3, 3), "c": torch.arange(16.0)}
    save_file_pt(tensors, path)
    return path, tensors


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_prefetch_delivers_each_tensor_once_in_order(three, backend):
    path, tensors = three
    with safe_open(path, framework="pt", backend=backend) as f:
        handle = f.prefetch(["c", "a", "b"], max_inflight=2)
        assert len(handle) == 3
        assert next(iter(handle))[0] == "c"
        assert len(handle) == 2
    rest = list(handle)  # the reads keep the file: the handle outlives the `with`
    assert [name for name, _ in rest] == ["a", "b"]
    assert all(torch.equal(t, tensors[n]) for n, t in rest)
    assert len(handle) == 0 and list(handle) == []
    assert not hasattr(handle, "get") and not hasattr(handle, "wait_all")


def test_prefetch_checks_its_arguments(three):
    path, _ = three
    with safe_open(path, framework="pt") as f:
        with pytest.raises(SafetensorError, match="does not contain tensor z"):
            f.prefetch(["a", "z"])
        with pytest.raises(SafetensorError, match="dtype"):
            f.prefetch(["a"], dtype=torch.float16)
        with pytest.raises(ValueError, match="max_inflight"):
            f.prefetch(["a"], max_inflight=0)
        assert dict(f.prefetch(["b"], dtype=None, max_inflight=8)).keys() == {"b"}
    with pytest.raises(SafetensorError, match="File is closed"):
        f.prefetch(["a"])
