"""libsafetensors.numpy and the top-level serialize/deserialize, checked against an
independent numpy-only decoder of the format."""

from pathlib import Path

import numpy as np
import pytest

import format_oracle
from libsafetensors import SafetensorError, TensorSpec, deserialize, safe_open, serialize
from libsafetensors.numpy import load, load_file, save, save_file

NUMPY_DTYPES = ["bool", "uint8", "int8", "int16", "uint16", "float16", "int32", "uint32",
                "float32", "int64", "uint64", "float64", "complex64"]


def sample(dtype, shape=(3, 4)):
    return (np.arange(np.prod(shape)) % 5).astype(dtype).reshape(shape)


@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
def test_our_files_decode_with_numpy_alone(dtype, path):
    tensors = {"x": sample(dtype), "scalar": sample(dtype, ()), "empty": sample(dtype, (2, 0))}
    save_file(tensors, path, metadata={"k": "v"})
    decoded, metadata = format_oracle.decode(Path(path).read_bytes())
    assert metadata == {"k": "v"}
    for name, array in tensors.items():
        np.testing.assert_array_equal(decoded[name], array)
        assert decoded[name].shape == array.shape
    for loaded in (load_file(path), load_file(path, backend="pread"), load(save(tensors))):
        for name, array in tensors.items():
            assert loaded[name].dtype == array.dtype
            np.testing.assert_array_equal(loaded[name], array)


def test_arrays_that_are_not_c_contiguous_are_saved_by_value(path):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    tensors = {
        "fortran": np.asfortranarray(base),
        "strided": base[::2, 1::3],
        "transposed": base.T,
        "big_endian": base.astype(">f4"),
    }
    save_file(tensors, path)
    loaded = load_file(path)
    for name, array in tensors.items():
        np.testing.assert_array_equal(loaded[name], array, err_msg=name)
        assert loaded[name].dtype == np.float32


def test_metadata_is_written_in_sorted_order():
    first = save({"a": np.zeros(1)}, metadata={"z": "1", "a": "2", "m": "3"})
    second = save({"a": np.zeros(1)}, metadata={"m": "3", "z": "1", "a": "2"})
    assert first == second
    assert b'"__metadata__":{"a":"2","m":"3","z":"1"}' in first


def test_loaded_arrays_are_writable_views_that_keep_the_mapping(path):
    save_file({"a": np.arange(4, dtype=np.int32)}, path)
    with safe_open(path, framework="np") as f:
        array = f.get_tensor("a")
    owner = array
    while isinstance(owner, (np.ndarray, memoryview)):
        owner = owner.obj if isinstance(owner, memoryview) else owner.base
    assert type(owner).__name__ == "_Bytes" and owner.is_view  # the mapping, not a copy
    array[0] = 100  # copy-on-write
    assert load_file(path)["a"].tolist() == [0, 1, 2, 3]


def test_serialize_accepts_framework_and_format_dtype_names():
    data = np.arange(4, dtype=np.float32).tobytes()
    by_dict = serialize({"t": {"dtype": "float32", "shape": [4], "data": data}})
    by_spec = serialize({"t": TensorSpec("F32", (4,), data)})
    assert by_dict == by_spec
    assert deserialize(by_dict) == [("t", {"dtype": "F32", "shape": [4], "data": bytearray(data)})]


def test_serialize_errors():
    with pytest.raises(SafetensorError, match="Missing `data`"):
        serialize({"t": {"dtype": "float32", "shape": [1]}})
    with pytest.raises(SafetensorError, match="dtype float128 is not covered"):
        serialize({"t": {"dtype": "float128", "shape": [1], "data": b"\0" * 16}})
    with pytest.raises(SafetensorError, match="Error while serializing"):
        serialize({"t": {"dtype": "float32", "shape": [2], "data": b"\0" * 4}})
    with pytest.raises(TypeError, match="metadata"):
        serialize({}, metadata={"k": 1})
    with pytest.raises(SafetensorError, match="Error while deserializing"):
        deserialize(b"\x01\x00\x00\x00\x00\x00\x00\x00{")


def test_numpy_lacks_bfloat16_and_says_so(path):
    with open(path, "wb") as f:
        f.write(format_oracle.encode({"b": ("BF16", [2], b"\x80?\x80?")}))
    with safe_open(path, framework="np") as f:
        assert f.get_slice("b").get_dtype() == "BF16"
        try:
            import ml_dtypes  # noqa: F401
        except ImportError:
            with pytest.raises(SafetensorError, match="dtype BF16 .*numpy has no bfloat16"):
                f.get_tensor("b")
