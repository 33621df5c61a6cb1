"""More of the reference's release 0.8: `TensorSpec` by address (`data_ptr`, `data_len`), models
whose parameters are disjoint parts of one buffer, `save_model` leaving the caller's metadata
alone, and `safe_open(..., prefetch=True)` with `tensor_stream()`."""

import copy
import ctypes
import os
import pickle
import threading

import numpy as np
import pytest
import torch

import libsafetensors._prefetch as prefetch_module
from libsafetensors import SafetensorError, TensorSpec, safe_open, serialize, serialize_file
from libsafetensors.numpy import load_file as load_file_np
from libsafetensors.torch import (
    _find_shared_tensors,
    _remove_duplicate_names,
    load_model,
    save_file,
    save_model,
)

# ---------------------------------------------------------------------------------------------
# TensorSpec


def test_tensor_spec_by_address_writes_the_same_file_as_by_buffer(path):
    values = np.linspace(-3.0, 4.5, 12, dtype=np.float32).reshape(3, 4)
    flags = np.array([7, 0, 255, 9], dtype=np.uint8)
    by_address = {
        "values": TensorSpec(dtype="float32", shape=values.shape, data_ptr=values.ctypes.data,
                             data_len=values.nbytes),
        "flags": TensorSpec(dtype="U8", shape=[4], data_ptr=flags.ctypes.data, data_len=4),
    }
    by_buffer = {
        "values": TensorSpec("F32", [3, 4], values.tobytes()),
        "flags": {"dtype": "uint8", "shape": [4], "data": flags.tobytes()},
    }
    assert serialize(by_address, metadata={"k": "v"}) == serialize(by_buffer, metadata={"k": "v"})
    serialize_file(by_address, path)
    loaded = load_file_np(path)
    np.testing.assert_array_equal(loaded["values"], values)
    np.testing.assert_array_equal(loaded["flags"], flags)


def test_tensor_spec_names_its_dtype_in_the_format_and_checks_it():
    buffer = ctypes.create_string_buffer(8)
    spec = TensorSpec(dtype="bfloat16", shape=(2, 2), data_ptr=ctypes.addressof(buffer),
                      data_len=8)
    assert spec.dtype == "BF16"
    assert spec.shape == [2, 2]
    assert (spec.data, spec.data_len) == (None, 8)
    assert TensorSpec("int64", [1], b"\0" * 8).dtype == "I64"
    with pytest.raises(SafetensorError, match="complex128"):
        TensorSpec(dtype="complex128", shape=[1], data_ptr=1, data_len=16)


def test_tensor_spec_float4_storage_shape_becomes_the_logical_one():
    # torch reports float4_e2m1fn_x2 tensors by bytes, two F4 values each.
    assert TensorSpec("float4_e2m1fn_x2", (3, 5), b"\0" * 15).shape == [3, 10]
    assert TensorSpec("F4", (3, 10), b"\0" * 15).shape == [3, 10]


def test_tensor_spec_dimensions_must_fit_in_64_bits():
    with pytest.raises(SafetensorError, match="64 bits"):
        TensorSpec("F32", [1 << 64], data_ptr=64, data_len=4)
    # float4_e2m1fn_x2 doubles the last dimension: 2^63 + 1 no longer fits.
    with pytest.raises(SafetensorError, match="64 bits"):
        TensorSpec(dtype="float4_e2m1fn_x2", shape=[2**63 + 1], data_ptr=64, data_len=1)


def test_raw_addresses_come_in_a_tensor_spec_not_a_dict():
    buffer = ctypes.create_string_buffer(4)
    with pytest.raises(TypeError, match="TensorSpec"):
        serialize({"t": {"dtype": "F32", "shape": [1], "data_ptr": ctypes.addressof(buffer),
                         "data_len": 4}})
    # The {dtype, shape, data} dict form stays.
    assert serialize({"t": {"dtype": "F32", "shape": [1], "data": b"\0" * 4}})


def test_tensor_spec_survives_copy_and_pickle():
    for spec in (TensorSpec("float4_e2m1fn_x2", (2, 3), b"\0" * 6),
                 TensorSpec(dtype="bfloat16", shape=[4], data_ptr=4096, data_len=8)):
        for twin in (copy.copy(spec), copy.deepcopy(spec), pickle.loads(pickle.dumps(spec))):
            assert twin == spec and type(twin) is TensorSpec


def test_tensor_spec_wants_exactly_one_source_of_bytes():
    with pytest.raises(TypeError, match="data_ptr"):
        TensorSpec(dtype="F32", shape=[1])
    with pytest.raises(TypeError, match="data_ptr"):
        TensorSpec(dtype="F32", shape=[1], data_ptr=64)
    with pytest.raises(TypeError, match="not both"):
        TensorSpec("F32", [1], b"\0" * 4, data_ptr=64, data_len=4)
    with pytest.raises(ValueError, match="negative"):
        TensorSpec("F32", [-1], b"")


def test_tensor_spec_by_address_of_the_wrong_size_is_refused():
    values = np.zeros(6, dtype=np.float32)
    spec = TensorSpec(dtype="F32", shape=[5], data_ptr=values.ctypes.data, data_len=values.nbytes)
    with pytest.raises(SafetensorError):
        serialize({"t": spec})


# ---------------------------------------------------------------------------------------------
# Parameters that are disjoint parts of one buffer


class TwoLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.first = torch.nn.Linear(3, 5)
        self.second = torch.nn.Linear(5, 2)


def pack_into_one_buffer(model):
    """Re-points every parameter at its own part of one flat buffer (as cuDNN RNNs do)."""
    params = list(model.named_parameters())
    flat = torch.empty(sum(p.numel() for _, p in params))
    offset = 0
    for _, param in params:
        part = flat[offset:offset + param.numel()].view_as(param)
        part.copy_(param.detach())
        param.data = part
        offset += param.numel()
    return flat


def test_a_lone_part_of_a_buffer_has_nothing_to_remove():
    flat = torch.arange(10.0)
    assert _remove_duplicate_names({"head": flat[:4]}) == {}
    assert _remove_duplicate_names({"head": flat[:4], "tail": flat[6:]}) == {}
    # Overlapping parts, neither the whole buffer, still cannot be told apart.
    with pytest.raises(RuntimeError, match="none of them covers"):
        _remove_duplicate_names({"head": flat[:6], "tail": flat[4:]})


def test_model_with_parameters_packed_in_one_buffer_round_trips(path):
    torch.manual_seed(3)
    model = TwoLayers()
    expected = {name: t.clone() for name, t in model.state_dict().items()}
    pack_into_one_buffer(model)
    groups = _find_shared_tensors(model.state_dict())
    assert sorted(len(g) for g in groups) == [1, 1, 1, 1]

    save_model(model, path)
    with safe_open(path, framework="pt") as f:
        assert f.metadata() is None  # nothing was dropped
        assert sorted(f.keys()) == sorted(expected)

    torch.manual_seed(4)
    other = TwoLayers()
    missing, unexpected = load_model(other, path)
    assert (list(missing), list(unexpected)) == ([], [])
    for name, tensor in other.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


class Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(6, 3)
        self.head = torch.nn.Linear(3, 6, bias=False)
        self.head.weight = self.embed.weight


def test_save_model_leaves_the_callers_metadata_unchanged(path):
    metadata = {"origin": "unit test"}
    save_model(Tied(), path, metadata=metadata)
    assert metadata == {"origin": "unit test"}
    with safe_open(path, framework="pt") as f:
        assert f.metadata() == {"origin": "unit test", "head.weight": "embed.weight"}


# ---------------------------------------------------------------------------------------------
# safe_open(..., prefetch=True)


@pytest.fixture
def weights(path):
    tensors = {
        "w.a": torch.arange(20, dtype=torch.float32).reshape(4, 5),
        "w.b": torch.tensor([1, -2, 3], dtype=torch.int16),
        "w.c": torch.zeros((0, 3), dtype=torch.float16),
        "w.d": torch.full((2, 2), 0.75, dtype=torch.bfloat16),
        "w.e": torch.tensor(9, dtype=torch.int64),
    }
    save_file(tensors, path)
    return tensors


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(framework="pt", device="cuda:0", backend="mmap"), 'backend="pread"'),
        (dict(framework="pt", device="cuda:0", mmap=True), 'backend="pread"'),
        (dict(framework="numpy", backend="pread"), 'framework="pt"'),
        (dict(framework="pt", backend="pread"), "cuda"),
        (dict(framework="pt", device="cpu", backend="pread"), "cuda"),
        (dict(framework="pt", device={"": "cuda:0"}, backend="pread"), "cuda"),
    ],
)
def test_prefetch_states_what_it_needs(weights, path, kwargs, message):
    with pytest.raises(SafetensorError, match=message):
        safe_open(path, prefetch=True, **kwargs)


def test_tensor_stream_needs_prefetch(weights, path):
    for backend in ("mmap", "pread"):
        with safe_open(path, framework="pt", backend=backend) as f:
            with pytest.raises(SafetensorError, match="prefetch=True"):
                f.tensor_stream()


@pytest.fixture
def cpu_prefetch(monkeypatch):
    """Lets prefetch load onto the CPU, so that its bookkeeping runs without a GPU."""
    monkeypatch.setattr(prefetch_module, "_PREFETCH_DEVICE_TYPES", ("cuda", "cpu"))

    def open_prefetching(path):
        return safe_open(path, framework="pt", device="cpu", backend="pread", prefetch=True)

    return open_prefetching


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def test_tensor_stream_delivers_every_tensor_once(weights, path, cpu_prefetch):
    with cpu_prefetch(path) as f:
        got = dict(f.tensor_stream())
        assert list(f.tensor_stream()) == []  # all taken
    assert got.keys() == weights.keys()
    for name, tensor in weights.items():
        assert same(got[name], tensor), name


def test_get_tensor_takes_a_tensor_once(weights, path, cpu_prefetch):
    with cpu_prefetch(path) as f:
        assert same(f.get_tensor("w.d"), weights["w.d"])
        with pytest.raises(SafetensorError, match="already delivered"):
            f.get_tensor("w.d")
        with pytest.raises(SafetensorError, match="does not contain tensor w.z"):
            f.get_tensor("w.z")
        streamed = {name for name, _ in f.tensor_stream()}
        assert streamed == set(weights) - {"w.d"}
        with pytest.raises(SafetensorError, match="already delivered"):
            f.get_tensor("w.a")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_tensor_the_dead_worker_was_loading_is_loaded_by_the_caller(weights, path,
                                                                     cpu_prefetch, monkeypatch):
    # The worker dies (an error no `except Exception` catches) while loading the first tensor
    # in file order; taking that tensor must not wait for it forever.
    load = prefetch_module._DeviceLoader._load

    def dying_load(self, name):
        if threading.current_thread() is self._worker:
            raise SystemExit("worker gone")
        return load(self, name)

    monkeypatch.setattr(prefetch_module._DeviceLoader, "_load", dying_load)
    with cpu_prefetch(path) as f:
        first = f.offset_keys()[0]
        f._loader._worker.join(timeout=10)
        taken = []
        taker = threading.Thread(target=lambda: taken.append(f.get_tensor(first)), daemon=True)
        taker.start()
        taker.join(timeout=10)
        assert taken, "get_tensor waited for a worker that is gone"
        assert same(taken[0], weights[first])


def test_get_tensors_with_prefetch_takes_them_all(weights, path, cpu_prefetch):
    with cpu_prefetch(path) as f:
        got = f.get_tensors()
        assert list(f.tensor_stream()) == []
    assert all(same(got[name], tensor) for name, tensor in weights.items())


def test_prefetched_tensors_outlive_the_handle(weights, path, cpu_prefetch):
    with cpu_prefetch(path) as f:
        first = f.get_tensor("w.a")
        rest = dict(f.tensor_stream())
    assert same(first, weights["w.a"])
    assert all(same(rest[name], weights[name]) for name in rest)


def test_closing_stops_the_stream(weights, path, cpu_prefetch):
    f = cpu_prefetch(path)
    stream = f.tensor_stream()
    next(stream)
    f.__exit__(None, None, None)
    with pytest.raises(SafetensorError, match="closed"):
        for _ in stream:
            pass
    with pytest.raises(SafetensorError, match="closed"):
        f.get_tensor("w.a")


def test_prefetch_worker_ends_with_the_handle(weights, path, cpu_prefetch):
    with cpu_prefetch(path) as f:
        worker = f._loader._worker
    assert not worker.is_alive()


def test_prefetch_of_a_large_file_from_several_threads(tmp_path, cpu_prefetch):
    # Many tensors, taken concurrently by get_tensor and the stream: each exactly once.
    tensors = {f"t{i:03d}": torch.full((64,), float(i)) for i in range(200)}
    path = os.path.join(tmp_path, "many.safetensors")
    save_file(tensors, path)
    with cpu_prefetch(path) as f:
        taken = {}
        errors = []

        def take(names):
            for name in names:
                try:
                    taken.setdefault(name, []).append(f.get_tensor(name))
                except SafetensorError as error:
                    errors.append(str(error))

        helpers = [threading.Thread(target=take, args=(sorted(tensors)[i::7],))
                   for i in range(0, 7, 2)]
        for helper in helpers:
            helper.start()
        for name, tensor in f.tensor_stream():
            taken.setdefault(name, []).append(tensor)
        for helper in helpers:
            helper.join()
    assert all("already delivered" in e for e in errors)
    assert taken.keys() == tensors.keys()
    for name, got in taken.items():
        assert len(got) == 1, name
        assert torch.equal(got[0], tensors[name])
