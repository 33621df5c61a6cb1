"""The reference's import paths, through the alias package in alias/ (see conftest.py)."""

import pickle

import numpy as np
import torch

import libsafetensors
import safetensors
from safetensors import SafetensorError, safe_open, serialize
from safetensors.numpy import load as load_np
from safetensors.numpy import save as save_np
from safetensors.safetensors_rust import SafetensorError as RustError
from safetensors.torch import _find_shared_tensors, load_file, save_file, storage_ptr


def test_alias_resolves_to_libsafetensors():
    assert safetensors.safe_open is libsafetensors.safe_open
    assert safetensors.torch is libsafetensors.torch
    assert safetensors.numpy is libsafetensors.numpy
    assert RustError is SafetensorError is libsafetensors.SafetensorError
    assert callable(serialize)


def test_reference_style_usage(path):
    tensors = {"a": torch.zeros((2, 2)), "b": torch.zeros((2, 3), dtype=torch.uint8)}
    save_file(tensors, path)
    with safe_open(path, framework="pt", device="cpu") as f:
        assert f.keys() == ["a", "b"]
        assert torch.equal(f.get_slice("a")[:1], tensors["a"][:1])
    loaded = load_file(path)
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    assert _find_shared_tensors(tensors) == [{"a"}, {"b"}]
    assert storage_ptr(tensors["a"]) == tensors["a"].data_ptr()
    assert load_np(save_np({"x": np.ones(3)}))["x"].tolist() == [1.0, 1.0, 1.0]


def test_safetensor_error_pickles():
    for error in (SafetensorError(), SafetensorError("Error while deserializing header")):
        restored = pickle.loads(pickle.dumps(error))
        assert isinstance(restored, SafetensorError)
        assert restored.args == error.args
