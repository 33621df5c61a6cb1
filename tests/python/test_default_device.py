"""Loads return CPU tensors whatever torch's default device is: under `with torch.device(...)`
(accelerate's init_empty_weights, a CUDA context in the reference's own GPU tests) and after
torch.set_default_device, a factory call without a device allocates there. The "meta" device
stands in for CUDA here: it exists on every build, and a tensor that went there has no data."""

import pytest
import torch

import libsafetensors.torch as st

pytestmark = pytest.mark.skipif(not hasattr(torch, "set_default_device"),
                                reason="torch < 2.0 has no default device to change")


@pytest.fixture
def saved(tmp_path):
    data = {
        "weight": torch.arange(12, dtype=torch.float32).reshape(3, 4),
        "empty": torch.zeros(0, 3),
        "empty_bf16": torch.zeros(2, 0, dtype=torch.bfloat16),
        "scalar": torch.tensor(2.5),
        "half": torch.arange(5, dtype=torch.bfloat16),
        "mask": torch.tensor([True, False, True]),
    }
    path = tmp_path / "model.safetensors"
    st.save_file(data, str(path))
    return data, path


def _safe_open_tensors(path):
    with st.safe_open(str(path), framework="pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}


def _safe_open_slices(path):
    """Every tensor through get_slice (whole; a 0-d tensor cannot be sliced, as in torch)."""
    out = {}
    with st.safe_open(str(path), framework="pt") as f:
        for name in f.keys():
            part = f.get_slice(name)
            out[name] = part[:] if part.get_shape() else f.get_tensor(name)
    return out


LOADERS = {
    "load_file": lambda path: st.load_file(str(path)),
    "load_file_materialize": lambda path: st.load_file(str(path), materialize=True),
    "load_bytes": lambda path: st.load(path.read_bytes()),
    "load_checkpoint": lambda path: st.load_checkpoint(str(path)),
    "load_checkpoint_copy": lambda path: st.load_checkpoint(str(path), copy=True),
    "load_checkpoint_bf16": lambda path: st.load_checkpoint(str(path), dtype=torch.bfloat16),
    "load_file_f16": lambda path: st.load_file(str(path), dtype=torch.float16),
    "load_checkpoint_device_map": lambda path: st.load_checkpoint(str(path), device_map={"": "cpu"}),
    "safe_open_get_tensor": _safe_open_tensors,
    "safe_open_get_slice": _safe_open_slices,
}


def _check_cpu_and_equal(loaded, data):
    assert set(loaded) == set(data)
    for name, tensor in loaded.items():
        assert tensor.device == torch.device("cpu"), (name, tensor.device)
        expected = data[name]
        if tensor.dtype != expected.dtype:  # a converting load: compare as torch converts
            expected = expected.to(tensor.dtype) if expected.is_floating_point() else expected
        assert tensor.dtype == expected.dtype, name
        assert torch.equal(tensor, expected), name


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_loads_are_on_the_cpu_inside_a_device_context(saved, loader):
    data, path = saved
    with torch.device("meta"):
        loaded = LOADERS[loader](path)
    _check_cpu_and_equal(loaded, data)


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_loads_are_on_the_cpu_under_another_default_device(saved, loader):
    data, path = saved
    torch.set_default_device("meta")
    try:
        loaded = LOADERS[loader](path)
    finally:
        torch.set_default_device("cpu")
    _check_cpu_and_equal(loaded, data)


def test_saving_inside_a_device_context_writes_the_same_bytes(saved, tmp_path):
    data, path = saved
    inside = tmp_path / "inside.safetensors"
    with torch.device("meta"):
        st.save_file(data, str(inside))
        in_memory = st.save(data)
    assert inside.read_bytes() == path.read_bytes()
    assert in_memory == path.read_bytes()
