"""Bad files, closed handles, and concurrent reads from threads."""

import os
import struct
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import format_oracle
from libsafetensors import SafetensorError, safe_open
from libsafetensors.numpy import save_file

BACKENDS = ["mmap", "pread"]


def write(path, blob):
    with open(path, "wb") as f:
        f.write(blob)


def header(text):
    return struct.pack("<Q", len(text)) + text


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_files_raise_safetensor_error(path, backend):
    good = format_oracle.encode({"a": ("F32", [2], b"\0" * 8)})
    cases = {
        "empty": b"",
        "short": b"\x01\x02",
        "header past the end": struct.pack("<Q", 1000) + b"{}",
        "header too large": struct.pack("<Q", 100_000_001) + b" " * 16,
        "not json": header(b"{not json}"),
        "unknown dtype": header(b'{"a":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}}')
                         + b"\0" * 4,
        "truncated data": good[:-1],
        "trailing data": good + b"\0",
        "overlap": header(b'{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},'
                          b'"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}') + b"\0" * 3,
    }  # fmt: skip
    for case, blob in cases.items():
        write(path, blob)
        with pytest.raises(SafetensorError, match="Error while deserializing header") as error:
            safe_open(path, framework="np", backend=backend)
        assert path in str(error.value), case


def test_missing_files_and_directories(tmp_path):
    missing = str(tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError) as error:
        safe_open(missing, framework="pt")
    assert str(error.value) == f"No such file or directory: {missing}"  # release 0.8's wording
    with pytest.raises(SafetensorError):
        safe_open(str(tmp_path), framework="np")


def test_handle_closes_and_names_missing_tensors(path):
    save_file({"a": np.zeros(2)}, path)
    with safe_open(path, framework="np") as f:
        with pytest.raises(SafetensorError, match="File does not contain tensor b"):
            f.get_tensor("b")
        with pytest.raises(SafetensorError, match="File does not contain tensor b"):
            f.get_slice("b")
    for call in (f.keys, f.offset_keys, f.metadata, lambda: f.get_tensor("a")):
        with pytest.raises(SafetensorError, match="File is closed"):
            call()
    with pytest.raises(SafetensorError, match="framework jnp is invalid"):
        safe_open(path, framework="jnp")
    with pytest.raises(SafetensorError, match="backend io_uring is invalid"):
        safe_open(path, framework="np", backend="io_uring")


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_reads_from_threads(path, backend):
    tensors = {f"t{i}": np.random.default_rng(i).standard_normal((64, 33)) for i in range(16)}
    save_file(tensors, path)
    barrier = threading.Barrier(8)

    with safe_open(path, framework="np", backend=backend) as f:

        def read_all(worker):
            barrier.wait()
            for round_ in range(20):
                name = f"t{(worker + round_) % 16}"
                assert np.array_equal(f.get_tensor(name), tensors[name])
                assert np.array_equal(f.get_slice(name)[3:40:3, ::2], tensors[name][3:40:3, ::2])
            return worker

        with ThreadPoolExecutor(max_workers=8) as pool:
            assert sorted(pool.map(read_all, range(8))) == list(range(8))


def test_writes_are_atomic_and_replace_files(path):
    save_file({"old": np.zeros(1)}, path)
    save_file({"new": np.ones(1)}, path)
    with safe_open(path, framework="np") as f:
        assert f.keys() == ["new"]
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]


def test_open_file_objects(path):
    from libsafetensors import _safe_open_handle

    save_file({"a": np.arange(3.0)}, path)
    for mode in ("rb", "r"):
        with open(path, mode) as handle:
            with _safe_open_handle(handle, framework="np") as f:
                assert f.get_tensor("a").tolist() == [0.0, 1.0, 2.0]
