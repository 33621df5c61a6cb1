"""File names as the OS has them: every function taking a path accepts what os.open accepts
(str, bytes, os.PathLike, names that are not UTF-8), and errors naming such a path work."""

import json
import os
import pathlib
import subprocess

import numpy as np
import pytest
import torch

import libsafetensors
import libsafetensors.numpy as st_np
import libsafetensors.torch as st_pt
from libsafetensors import Checkpoint, SafetensorError, safe_open, serialize_file

RAW_NAME = b"\xff\xfe caf\xc3\xa9 \xed\xa0\x80.safetensors"  # invalid UTF-8, a lone surrogate too
ARRAYS = {"x": np.arange(5, dtype=np.int32)}


class Path:
    """An os.PathLike other than pathlib's, giving bytes."""

    def __init__(self, raw):
        self.raw = raw

    def __fspath__(self):
        return self.raw


def spellings(raw):
    """The same file name as bytes, as the str os.fsdecode makes of it, and as PathLikes."""
    return [raw, os.fsdecode(raw), pathlib.Path(os.fsdecode(raw)), Path(raw)]


@pytest.fixture
def directory(tmp_path):
    return os.fsencode(tmp_path)


def check_arrays(loaded):
    assert set(loaded) == {"x"}
    np.testing.assert_array_equal(np.asarray(loaded["x"]), ARRAYS["x"])


def test_numpy_round_trip_on_every_spelling(directory):
    raw = os.path.join(directory, RAW_NAME)
    for spelling in spellings(raw):
        st_np.save_file(ARRAYS, spelling)
        assert os.path.exists(raw)
        for backend in ("mmap", "pread"):
            check_arrays(st_np.load_file(spelling, backend=backend))
            with safe_open(spelling, "np", backend=backend) as f:
                assert f.keys() == ["x"]
        check_arrays(st_np.load_checkpoint(spelling))
        os.remove(raw)


def test_torch_round_trip_on_every_spelling(directory):
    raw = os.path.join(directory, RAW_NAME)
    tensors = {"x": torch.arange(5, dtype=torch.int32)}
    for spelling in spellings(raw):
        st_pt.save_file(tensors, spelling)
        check_arrays(st_pt.load_file(spelling))
        check_arrays(st_pt.load_file(spelling, dtype=torch.float32))
        check_arrays(st_pt.load_checkpoint(spelling))
        model = torch.nn.Linear(2, 3)
        st_pt.save_model(model, spelling)
        assert st_pt.load_model(torch.nn.Linear(2, 3), spelling) == (set(), [])
        os.remove(raw)


def test_serialize_file_on_every_spelling(directory):
    raw = os.path.join(directory, RAW_NAME)
    for spelling in spellings(raw):
        serialize_file({"x": {"dtype": "I32", "shape": [5], "data": ARRAYS["x"].tobytes()}},
                       spelling)
        check_arrays(st_np.load_file(raw))
        os.remove(raw)


def test_checkpoint_in_a_directory_that_is_not_utf8(directory):
    folder = os.path.join(directory, b"\xff\xfe dir")
    os.mkdir(folder)
    shard = "model-\u00e9-00001-of-00001.safetensors".encode()  # an index names shards in UTF-8
    st_np.save_file(ARRAYS, os.path.join(folder, shard))
    with open(os.path.join(folder, b"model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 20}, "weight_map": {"x": os.fsdecode(shard)}}, f)
    for spelling in spellings(folder):
        checkpoint = Checkpoint(spelling)
        assert [os.fsencode(f) for f in checkpoint.files()] == [os.path.join(folder, shard)]
        assert os.fsencode(checkpoint.index_path) == os.path.join(
            folder, b"model.safetensors.index.json")
        assert os.fsencode(checkpoint.info("x")[0]) == os.path.join(folder, shard)
        np.testing.assert_array_equal(checkpoint.get_tensor("x", "np"), ARRAYS["x"])
        check_arrays(st_np.load_checkpoint(spelling))
        assert "Checkpoint(" in repr(checkpoint)


def test_errors_naming_such_paths_are_readable(directory):
    missing = os.path.join(directory, b"\xff missing.safetensors")
    for spelling in spellings(missing):
        with pytest.raises(FileNotFoundError):
            safe_open(spelling, "np")
    broken = os.path.join(directory, RAW_NAME)
    with open(broken, "wb") as f:
        f.write(b"\x10" + b"\0" * 7 + b"not json")
    for spelling in spellings(broken):
        for backend in ("mmap", "pread"):
            with pytest.raises(SafetensorError) as error:
                safe_open(spelling, "np", backend=backend)
            str(error.value).encode("utf-8")  # printable anywhere, even with a strict codec
        with pytest.raises(SafetensorError) as error:
            Checkpoint(spelling)
        str(error.value).encode("utf-8")


def test_opened_file_reports_its_name(directory):
    raw = os.path.join(directory, RAW_NAME)
    st_np.save_file(ARRAYS, raw)
    file = libsafetensors._core.File.open(raw)
    assert os.fsencode(file.name) == raw


def test_open_file_objects_with_such_names(directory):
    raw = os.path.join(directory, RAW_NAME)
    st_np.save_file(ARRAYS, raw)
    for spelling in (raw, os.fsdecode(raw)):
        with open(spelling, "rb") as handle:
            with libsafetensors._safe_open_handle(handle, "np") as f:
                np.testing.assert_array_equal(f.get_tensor("x"), ARRAYS["x"])


@pytest.mark.parametrize("bad", [3, None, 2.5, ["a"]])
def test_objects_that_are_not_paths_are_refused(bad):
    with pytest.raises(TypeError):
        safe_open(bad, "np")
    with pytest.raises(TypeError):
        st_np.save_file(ARRAYS, bad)
    with pytest.raises(TypeError):
        Checkpoint(bad)


def test_paths_with_nul_are_refused(directory):
    with pytest.raises(ValueError):
        safe_open(b"a\0b", "np")
    with pytest.raises(ValueError):
        st_np.save_file(ARRAYS, os.path.join(directory, b"a\0b"))
    with pytest.raises(ValueError):
        Checkpoint("a\0b")


def cli_path():
    """The `safetensors` command of the build tree this package comes from (or
    $SAFETENSORS_CLI)."""
    built = os.path.join(os.path.dirname(libsafetensors.__file__), "..", "..", "tools",
                         "safetensors")
    return os.environ.get("SAFETENSORS_CLI", os.path.normpath(built))


@pytest.mark.skipif(not os.access(cli_path(), os.X_OK),
                    reason="no safetensors command next to this package (set SAFETENSORS_CLI)")
def test_the_command_line_takes_such_names(directory):
    raw = os.path.join(directory, RAW_NAME)
    st_np.save_file(ARRAYS, raw)
    cast = os.path.join(directory, b"\xfe cast.safetensors")
    merged = os.path.join(directory, b"\xfd merged.safetensors")
    for args in (["validate", raw], ["inspect", raw], ["get", raw, "x"],
                 ["cast", raw, cast, "--dtype", "F16"], ["merge", "--output", merged, raw]):
        run = subprocess.run([cli_path()] + args, capture_output=True)
        assert run.returncode == 0, (args, run.stderr)
    assert raw in subprocess.run([cli_path(), "validate", raw], capture_output=True).stdout
    check_arrays(st_np.load_file(merged))
    np.testing.assert_array_equal(st_np.load_file(cast)["x"], ARRAYS["x"])
