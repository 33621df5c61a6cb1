"""Valid files whose shapes numpy or torch cannot hold, and index expressions at the edges:
SafetensorError naming the tensor, never a framework's or pybind11's own error."""

import json
import struct

import numpy as np
import pytest
import torch

import libsafetensors.numpy as st_np
import libsafetensors.torch as st_pt
from libsafetensors import SafetensorError, safe_open

# Valid files: every tensor's bytes match its shape. Each shape is one that numpy, torch or
# both cannot represent in some version; where one can, the result must have that shape.
SHAPES = {
    "dim_2_63": [0, 2**63],
    "dim_2_64": [0, 2**64 - 1],
    "product_overflows": [0, 2**40, 2**40],
    "rank_64": [1] * 64,
    "rank_64_empty": [0] * 64,
    "rank_40": [1] * 40,
}


def raw_file(name, shape):
    nbytes = 0 if 0 in shape else 4
    header = {name: {"dtype": "F32", "shape": shape, "data_offsets": [0, nbytes]}}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"\x01" * nbytes


def loaders(path, blob, framework):
    """Every way to get the whole tensor `t` of a file in `framework`."""
    module = st_np if framework == "np" else st_pt
    yield "get_tensor", lambda: safe_open(path, framework).get_tensor("t")
    yield "pread", lambda: safe_open(path, framework, backend="pread").get_tensor("t")
    yield "get_slice[:]", lambda: safe_open(path, framework).get_slice("t")[:]
    yield "get_slice[...]", lambda: safe_open(path, framework).get_slice("t")[...]
    yield "load", lambda: module.load(blob)["t"]
    yield "load_file", lambda: module.load_file(path)["t"]
    yield "load_checkpoint", lambda: module.load_checkpoint(path)["t"]


@pytest.mark.parametrize("framework", ["np", "pt"])
@pytest.mark.parametrize("label", sorted(SHAPES))
def test_unrepresentable_shapes_raise_safetensor_error(tmp_path, framework, label):
    shape = SHAPES[label]
    blob = raw_file("t", shape)
    path = str(tmp_path / f"{label}.safetensors")
    with open(path, "wb") as f:
        f.write(blob)
    for how, load in loaders(path, blob, framework):
        try:
            result = load()
        except SafetensorError as error:
            assert "t" in str(error) and str(shape[:2])[:-1] in str(error), (how, str(error))
        else:
            assert list(result.shape) == shape, how


@pytest.mark.parametrize("framework", ["np", "pt"])
@pytest.mark.parametrize("shape", [[1] * 65, [0] * 65, [1] * 100_000], ids=["65", "65_empty", "100000"])
def test_more_dimensions_than_the_library_supports_are_refused_at_open(tmp_path, framework, shape):
    blob = raw_file("t", shape)
    path = str(tmp_path / "deep.safetensors")
    with open(path, "wb") as f:
        f.write(blob)
    for _, load in loaders(path, blob, framework):
        with pytest.raises(SafetensorError, match=f"`t`.* {len(shape)} dimensions, more than the 64"):
            load()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edges")
    names = {}
    for name, tensors in {"vec": {"t": np.arange(4, dtype=np.float32)},
                          "mat": {"t": np.arange(6, dtype=np.float32).reshape(2, 3)}}.items():
        names[name] = str(folder / f"{name}.safetensors")
        st_np.save_file(tensors, names[name])
    names["empty"] = str(folder / "empty.safetensors")
    with open(names["empty"], "wb") as f:
        f.write(raw_file("t", [0, 2**63]))
    return names


def as_numpy(result):
    return result.numpy() if isinstance(result, torch.Tensor) else result


@pytest.mark.parametrize("framework", ["np", "pt"])
def test_bounds_beyond_64_bits_slice_as_numpy_does(files, framework):
    vec = np.arange(4, dtype=np.float32)
    keys = [slice(2**63, None), slice(2**64, None), slice(-2**70, None), slice(None, -2**70),
            slice(None, None, 2**63), slice(1, None, 2**70), slice(-2**70, 3, 2)]
    with safe_open(files["vec"], framework) as f:
        v = f.get_slice("t")
        for key in keys:
            if framework == "np" and key.indices(4)[0] >= 4:
                with pytest.raises(SafetensorError):  # as the reference: starts past the end
                    v[key]
                continue
            np.testing.assert_array_equal(as_numpy(v[key]), vec[key], err_msg=str(key))
        # As in the reference, a stop beyond the dimension is an error for numpy; torch's
        # slices clamp it, and an index out of range is torch's error.
        for key in (slice(None, 2**63), slice(2**70, 2**70)):
            if framework == "np":
                with pytest.raises(SafetensorError):
                    v[key]
            else:
                np.testing.assert_array_equal(as_numpy(v[key]), vec[key], err_msg=str(key))
        for key in (2**63, 2**70, -2**70):
            torch_errors = (ValueError, RuntimeError, IndexError)  # as torch has it
            with pytest.raises(SafetensorError if framework == "np" else torch_errors):
                v[key]


@pytest.mark.parametrize("framework", ["np", "pt"])
def test_unsupported_indexes_raise_safetensor_error(files, framework):
    whole = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    with safe_open(files["mat"], framework) as f:
        m = f.get_slice("t")
        for key in ([[], 0], ([], 0), (0, []), None, (None, 0), (0, None), (Ellipsis, None),
                    0.5, "a", np.array([1]), [0]):
            if framework == "np":
                with pytest.raises(SafetensorError):
                    m[key]
                continue
            # torch indexing, as the reference 0.8 gives: its result or its error.
            try:
                expected = whole[key]
            except Exception as error:  # noqa: BLE001 - whichever torch raises
                with pytest.raises(type(error)):
                    m[key]
            else:
                assert torch.equal(m[key], expected), key
        # Deliberately refused everywhere (see docs/FORMAT.md).
        for key in (True, False, (True, 0), (0, np.bool_(True))):
            with pytest.raises(SafetensorError):
                m[key]
        np.testing.assert_array_equal(as_numpy(m[...]), np.arange(6).reshape(2, 3))
        np.testing.assert_array_equal(as_numpy(m[..., 1]), [1, 4])
        np.testing.assert_array_equal(as_numpy(m[np.int64(1)]), [3, 4, 5])


@pytest.mark.parametrize("framework", ["np", "pt"])
def test_slices_of_empty_tensors_with_huge_dimensions(files, framework):
    with safe_open(files["empty"], framework) as f:
        e = f.get_slice("t")
        assert e.get_shape() == [0, 2**63]
        for key in ((slice(None), slice(2**63 - 3, None)), (slice(None), slice(None, 5)),
                    (Ellipsis, slice(None, None, 2**62))):
            expected = [0, len(range(2**63)[key[1]])]
            try:
                got = e[key]
            except SafetensorError as error:
                assert "t" in str(error)
            else:
                assert list(got.shape) == expected, key
        for key in ((0, 0), (slice(None), 2**63), (slice(None), slice(None, 2**63 + 1))):
            with pytest.raises(SafetensorError):
                e[key]
