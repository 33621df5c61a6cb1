"""libsafetensors.Checkpoint: one name space over a sharded checkpoint, and the refusal of
indexes that disagree with their shards."""

import json
import os

import numpy as np
import pytest
import torch

import libsafetensors
from libsafetensors import Checkpoint, SafetensorError
from libsafetensors.torch import save_file

SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"
INDEX = "model.safetensors.index.json"


def nbytes(tensors):
    return sum(t.nelement() * t.element_size() for t in tensors.values())


def write_sharded(directory, shards, weight_map=None, total_size=None, metadata=None):
    """Writes {file name: tensors} with save_file and a transformers-style index over them;
    `weight_map` and `total_size` default to what the shards hold."""
    os.makedirs(directory, exist_ok=True)
    for name, tensors in shards.items():
        save_file(tensors, os.path.join(directory, name), metadata={"format": "pt"})
    if weight_map is None:
        weight_map = {t: name for name, tensors in shards.items() for t in tensors}
    if total_size is None:
        total_size = sum(nbytes(tensors) for tensors in shards.values())
    index = {"metadata": {"total_size": total_size, **(metadata or {})}, "weight_map": weight_map}
    path = os.path.join(directory, INDEX)
    with open(path, "w") as f:
        json.dump(index, f)
    return path


def two_shards():
    torch.manual_seed(0)
    return {
        SHARD1: {"h.0.weight": torch.randn(4, 3), "h.0.bias": torch.randn(3)},
        SHARD2: {"h.1.weight": torch.randn(2, 5).to(torch.bfloat16),
                 "steps": torch.arange(6, dtype=torch.int64)},
    }


@pytest.fixture
def sharded(tmp_path):
    shards = two_shards()
    index = write_sharded(str(tmp_path / "ckpt"), shards, metadata={"model": "tiny"})
    return str(tmp_path / "ckpt"), index, shards


def test_directory_index_and_single_file_open(sharded, tmp_path):
    directory, index, shards = sharded
    expected = {name: t for tensors in shards.values() for name, t in tensors.items()}
    for path in (directory, index):
        checkpoint = Checkpoint(path)
        assert checkpoint.keys() == sorted(expected)
        assert len(checkpoint) == 4
        assert "h.1.weight" in checkpoint and "absent" not in checkpoint
        assert checkpoint.files() == [os.path.join(directory, SHARD1),
                                      os.path.join(directory, SHARD2)]
        assert checkpoint.total_size == nbytes(expected)
        assert checkpoint.metadata() == {"model": "tiny"}
        assert checkpoint.index_path == index
        for name, tensor in expected.items():
            assert torch.equal(checkpoint.get_tensor(name), tensor)

    single = str(tmp_path / "single.safetensors")
    save_file(shards[SHARD1], single, metadata={"format": "pt"})
    checkpoint = Checkpoint(single)
    assert checkpoint.keys() == ["h.0.bias", "h.0.weight"]
    assert checkpoint.files() == [single]
    assert checkpoint.metadata() == {"format": "pt"}
    assert checkpoint.index_path is None
    assert isinstance(checkpoint, libsafetensors._core.Checkpoint)


def test_get_tensor_is_zero_copy_and_writable_without_changing_the_file(sharded):
    directory, _, shards = sharded
    checkpoint = Checkpoint(directory)
    first = checkpoint.get_tensor("h.0.weight")
    again = checkpoint.get_tensor("h.0.weight")
    assert first.data_ptr() == again.data_ptr()  # both views of the one mapping
    first.add_(1)
    assert torch.equal(Checkpoint(directory).get_tensor("h.0.weight"), shards[SHARD1]["h.0.weight"])


def test_get_tensor_frameworks_and_backends(sharded):
    directory, _, shards = sharded
    for backend in ("mmap", "pread"):
        checkpoint = Checkpoint(directory, backend=backend)
        array = checkpoint.get_tensor("h.0.bias", framework="np")
        assert isinstance(array, np.ndarray)
        np.testing.assert_array_equal(array, shards[SHARD1]["h.0.bias"].numpy())
        assert torch.equal(checkpoint.get_tensor("steps", framework="pt"), shards[SHARD2]["steps"])
    with pytest.raises(SafetensorError, match="backend nope is invalid"):
        Checkpoint(directory, backend="nope")


def test_get_tensor_of_an_absent_name(sharded):
    checkpoint = Checkpoint(sharded[0])
    with pytest.raises(SafetensorError, match="does not contain tensor absent"):
        checkpoint.get_tensor("absent")


def test_open_errors_keep_the_library_message(tmp_path):
    with pytest.raises(SafetensorError, match="nothing: the directory is empty"):
        Checkpoint(str(tmp_path))
    with pytest.raises(SafetensorError, match="missing.safetensors: cannot open"):
        Checkpoint(str(tmp_path / "missing.safetensors"))


# Each broken index with the words the error must contain.
def broken_missing_tensor(directory):
    shards = two_shards()
    weight_map = {t: name for name, tensors in shards.items() for t in tensors}
    weight_map["h.2.weight"] = SHARD2
    return write_sharded(directory, shards, weight_map=weight_map)


def broken_tensor_in_two_shards(directory):
    shards = two_shards()
    shards[SHARD2]["h.0.bias"] = torch.zeros(3)
    weight_map = {t: name for name, tensors in shards.items() for t in tensors}
    return write_sharded(directory, shards, weight_map=weight_map)


def broken_parent_shard_name(directory):
    shards = two_shards()
    outside = os.path.join(os.path.dirname(directory), "outside.safetensors")
    save_file({"w": torch.ones(2)}, outside)
    weight_map = {t: name for name, tensors in shards.items() for t in tensors}
    weight_map["w"] = "../outside.safetensors"
    return write_sharded(directory, shards, weight_map=weight_map)


def broken_absolute_shard_name(directory):
    shards = two_shards()
    weight_map = {t: name for name, tensors in shards.items() for t in tensors}
    weight_map["h.0.bias"] = os.path.join(directory, SHARD1)
    return write_sharded(directory, shards, weight_map=weight_map)


def broken_unmapped_tensor(directory):
    shards = two_shards()
    weight_map = {t: name for name, tensors in shards.items() for t in tensors}
    del weight_map["steps"]
    return write_sharded(directory, shards, weight_map=weight_map)


def broken_missing_shard(directory):
    shards = two_shards()
    weight_map = {t: name for name, tensors in shards.items() for t in tensors}
    weight_map["h.1.weight"] = "model-00003-of-00003.safetensors"
    return write_sharded(directory, shards, weight_map=weight_map)


def broken_wrong_shard(directory):
    shards = two_shards()
    weight_map = {t: name for name, tensors in shards.items() for t in tensors}
    weight_map["steps"] = SHARD1
    return write_sharded(directory, shards, weight_map=weight_map)


BROKEN = [
    (broken_missing_tensor, ["h.2.weight", SHARD2, "no shard has it"]),
    (broken_tensor_in_two_shards, ["h.0.bias", "in both", SHARD1, SHARD2]),
    (broken_parent_shard_name, ["../outside.safetensors", "leaves the directory"]),
    (broken_absolute_shard_name, ["absolute path"]),
    (broken_unmapped_tensor, ["steps", SHARD2, "does not map it"]),
    (broken_missing_shard, ["model-00003-of-00003.safetensors", "does not exist"]),
    (broken_wrong_shard, ["steps", "mapped to", SHARD1, SHARD2]),
]


@pytest.mark.parametrize("make, words", BROKEN, ids=[make.__name__ for make, _ in BROKEN])
def test_broken_index_is_refused_naming_the_problem(tmp_path, make, words):
    directory = str(tmp_path / "ckpt")
    index = make(directory)
    for path in (directory, index):
        with pytest.raises(SafetensorError) as error:
            Checkpoint(path)
        message = str(error.value)
        assert INDEX in message
        assert error.value.code == "invalid_index"
        for word in words:
            assert word in message, f"{word!r} not in {message!r}"
    # The loader opens through the same checks.
    with pytest.raises(SafetensorError, match=words[-1].replace(".", r"\.")):
        libsafetensors.torch.load_checkpoint(index)


def test_total_size_other_than_the_tensors_bytes_is_kept_not_refused(tmp_path):
    # mlx-lm writes the sum of the shards' file sizes (headers included); scripts that drop
    # tensors leave the old number. transformers never reads it, and neither do we.
    shards = two_shards()
    right = sum(nbytes(t) for t in shards.values())
    index = write_sharded(str(tmp_path / "mlx"), shards)
    files = sum(os.path.getsize(os.path.join(str(tmp_path / "mlx"), name)) for name in shards)
    index = write_sharded(str(tmp_path / "mlx"), shards, total_size=files)
    checkpoint = Checkpoint(index)
    assert checkpoint.declared_total_size == files != right
    assert checkpoint.total_size == right
    loaded = libsafetensors.torch.load_checkpoint(index)
    assert set(loaded) == {name for tensors in shards.values() for name in tensors}
    assert Checkpoint(write_sharded(str(tmp_path / "ok"), shards)).declared_total_size == right
