"""Python memory reaching the library: every bytes-like object is read by its logical bytes (its
strides obeyed) or refused with a clear error, and nothing outside it is ever read or written."""

import numpy as np
import pytest
import torch

import libsafetensors
import libsafetensors.numpy as st_np
import libsafetensors.torch as st_pt
from libsafetensors import Checkpoint, SafetensorError, TensorSpec, deserialize, serialize

TENSORS = {"a": np.arange(6, dtype=np.float32), "b": np.arange(12, dtype=np.int16).reshape(2, 6)}


@pytest.fixture(scope="module")
def blob():
    data = st_np.save(TENSORS)
    assert len(data) % 8 == 0  # so that it can be seen as an array of 8-byte items
    return data


def strided_copies(blob):
    """(label, object) pairs: buffers whose logical bytes are `blob` but whose memory is not
    laid out as one run of those bytes."""
    raw = np.frombuffer(blob, dtype=np.uint8)
    spread = np.zeros(2 * raw.size, dtype=np.uint8)
    spread[::2] = raw
    reversed_ = raw[::-1].copy()
    wide = np.zeros(2 * (raw.size // 8), dtype="<u8")
    wide[::2] = raw.view("<u8")
    doubled = bytearray(spread.tobytes())
    return [
        ("every other byte", spread[::2]),
        ("reversed", reversed_[::-1]),
        ("8-byte items, strided", wide[::2]),
        ("Fortran order", np.asfortranarray(raw.reshape(-1, 8))),
        ("memoryview slice", memoryview(doubled)[::2]),
    ]


def expect_tensors(loaded):
    assert list(loaded) == list(TENSORS)
    for name, array in TENSORS.items():
        np.testing.assert_array_equal(np.asarray(loaded[name]), array)


def test_strided_buffers_are_read_by_their_logical_bytes(blob):
    for label, data in strided_copies(blob):
        expect_tensors(st_np.load(data))
        expect_tensors({k: v.numpy() for k, v in st_pt.load(data).items()})
        entries = deserialize(data)
        assert [name for name, _ in entries] == list(TENSORS), label
        for name, entry in entries:
            assert bytes(entry["data"]) == TENSORS[name].tobytes(), label


def test_strided_buffers_never_read_past_their_memory(blob):
    # The reversed view starts at the last byte of its memory: reading forward from there
    # would leave the object after one byte.
    tail = np.frombuffer(blob[::-1], dtype=np.uint8)[::-1]
    for _ in range(3):
        expect_tensors(st_np.load(tail))


def test_strided_tensor_data_is_serialized_by_its_logical_bytes():
    values = np.arange(12, dtype=np.float32)
    spread = np.zeros(24, dtype=np.float32)
    spread[::2] = values
    doubled = bytearray(spread.tobytes())
    cases = [spread[::2], values[::-1].copy()[::-1], memoryview(doubled).cast("f")[::2]]
    for data in cases:
        for desc in ({"dtype": "F32", "shape": [12], "data": data},
                     TensorSpec("float32", [12], data)):
            loaded = st_np.load(serialize({"x": desc}))
            np.testing.assert_array_equal(loaded["x"], values)


def test_data_of_the_wrong_length_is_refused_naming_the_tensor():
    data = np.zeros(11, dtype=np.float32)
    for desc in ({"dtype": "F32", "shape": [12], "data": data},
                 TensorSpec("F32", [12], data[::-1]),
                 TensorSpec("F32", [12], data_ptr=data.ctypes.data, data_len=44)):
        with pytest.raises(SafetensorError, match="`?weight`?"):
            serialize({"weight": desc})


def test_objects_without_bytes_are_refused_naming_the_tensor():
    for data in ("text", 3, [1, 2, 3], np.array([object(), object()])):
        with pytest.raises((TypeError, ValueError), match="weight"):
            serialize({"weight": {"dtype": "U8", "shape": [2], "data": data}})


@pytest.mark.parametrize("to_file", [False, True])
def test_numpy_arrays_of_any_layout_are_saved_by_value(to_file, tmp_path):
    base = np.arange(48, dtype=np.float32).reshape(6, 8)
    arrays = {
        "negative": base[::-1, ::-2],
        "transposed": base.T,
        "big_endian": base.astype(">f4")[1::2],
        "zero_size": base[:0, ::3],
        "zero_dim": np.float64(2.5),
        "scalar_view": base[2, 3, ...],
    }
    if to_file:
        st_np.save_file(arrays, tmp_path / "a.safetensors")
        loaded = st_np.load_file(tmp_path / "a.safetensors")
    else:
        loaded = st_np.load(st_np.save(arrays))
    for name, array in arrays.items():
        got = loaded[name]
        assert got.shape == np.shape(array), name
        assert got.dtype == np.dtype(array.dtype).newbyteorder("="), name
        np.testing.assert_array_equal(got, array, err_msg=name)


def test_numpy_object_and_unknown_arrays_are_refused_naming_them():
    for array in (np.array([object()]), np.array(["text"]), np.zeros(2, dtype="float16,int8")):
        with pytest.raises((TypeError, ValueError, SafetensorError), match="weird"):
            st_np.save({"weird": array})


def test_torch_tensors_are_saved_by_value_or_refused_naming_them():
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    with pytest.raises(ValueError, match="`t`"):
        st_pt.save({"t": base.t()})
    other = base.clone()
    loaded = st_pt.load(st_pt.save({"part": base[1:3], "empty": base[:0], "scalar": other[1, 1]}))
    assert torch.equal(loaded["part"], base[1:3]) and loaded["scalar"] == other[1, 1]
    assert loaded["empty"].shape == (0, 6) and loaded["scalar"].shape == ()
    complex_ = torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64)
    # A conjugate view keeps the sign in a bit; its value is what is saved.
    assert torch.equal(st_pt.load(st_pt.save({"c": complex_.conj()}))["c"],
                       torch.tensor([1 - 2j, 3 + 4j], dtype=torch.complex64))


@pytest.fixture
def checkpoint(tmp_path):
    path = str(tmp_path / "c.safetensors")
    st_np.save_file({"w": np.arange(1024, dtype=np.float32)}, path)
    checkpoint = Checkpoint(path)
    return checkpoint, checkpoint.plan()


def test_load_into_refuses_strided_buffers_and_writes_nothing(checkpoint):
    checkpoint, plan = checkpoint
    size = plan.buffer_size
    memory = np.zeros(4 * size, dtype=np.uint8)
    views = [memory[size:2 * size][::-1], memory[::2], memory[size:3 * size].reshape(2, -1).T,
             memoryview(memory)[size:3 * size:2]]
    for view in views:
        with pytest.raises(ValueError, match="contiguous"):
            checkpoint.load_into(plan, view)
    assert not memory.any()


def test_load_into_refuses_read_only_and_too_small_buffers(checkpoint):
    checkpoint, plan = checkpoint
    frozen = np.zeros(plan.buffer_size, dtype=np.uint8)
    frozen.flags.writeable = False
    for buffer in (bytes(plan.buffer_size), frozen, memoryview(bytearray(plan.buffer_size))
                   .toreadonly()):
        with pytest.raises((TypeError, ValueError), match="writable"):
            checkpoint.load_into(plan, buffer)
    assert not frozen.any()
    with pytest.raises((ValueError, SafetensorError)):
        checkpoint.load_into(plan, np.zeros(plan.buffer_size - 1, dtype=np.uint8))
    with pytest.raises(TypeError):
        checkpoint.load_into(plan, "not a buffer")
    # Writing bytes over an object array's pointers would corrupt the interpreter.
    objects = np.full(plan.buffer_size // 8 + 1, None, dtype=object)
    with pytest.raises(TypeError, match="Python objects"):
        checkpoint.load_into(plan, objects)
    assert all(item is None for item in objects)


def test_load_into_fills_any_contiguous_writable_buffer(checkpoint):
    checkpoint, plan = checkpoint
    for buffer in (bytearray(plan.buffer_size), np.zeros(plan.buffer_size // 4, np.float32),
                   np.zeros((2, plan.buffer_size // 2), np.uint8)):
        checkpoint.load_into(plan, buffer)
        np.testing.assert_array_equal(np.frombuffer(buffer, np.float32)[:1024],
                                      np.arange(1024, dtype=np.float32))


def test_the_package_never_hands_strided_memory_down():
    # Every public callable taking bytes-like input, with a strided buffer of valid bytes.
    data = st_np.save(TENSORS)
    spread = np.zeros(2 * len(data), dtype=np.uint8)
    spread[::2] = np.frombuffer(data, dtype=np.uint8)
    file = libsafetensors._core.File.from_bytes(spread[::2])
    assert file.keys() == ["a", "b"]


def test_tensor_descriptions_with_wrong_types_are_refused_naming_the_tensor():
    data = bytes(8)
    cases = [
        ({"dtype": "U8", "shape": [2**64], "data": data}, ValueError),
        ({"dtype": "U8", "shape": [2**63], "data": data}, SafetensorError),  # size mismatch
        ({"dtype": "U8", "shape": [-1], "data": data}, ValueError),
        ({"dtype": "U8", "shape": ["8"], "data": data}, TypeError),
        ({"dtype": "U8", "shape": [8.0], "data": data}, TypeError),
        ({"dtype": 8, "shape": [8], "data": data}, TypeError),
        ({"dtype": "F\udcff", "shape": [8], "data": data}, ValueError),
        ({"dtype": "U7", "shape": [8], "data": data}, SafetensorError),
        (TensorSpec("U8", [8], data_ptr=0, data_len=8), ValueError),
        (TensorSpec("U8", [1], data_ptr=2**64 - 1, data_len=1), ValueError),
    ]
    for desc, error in cases:
        with pytest.raises(error, match="weight"):
            serialize({"weight": desc})


def test_names_and_metadata_that_are_not_unicode_are_refused():
    desc = {"dtype": "U8", "shape": [1], "data": b"\0"}
    with pytest.raises(ValueError, match="tensor name"):
        serialize({"w\udcff": desc})
    with pytest.raises(ValueError, match="metadata key"):
        serialize({"w": desc}, metadata={"k\udcff": "v"})
    with pytest.raises(ValueError, match="value of metadata key k"):
        serialize({"w": desc}, metadata={"k": "v\udcff"})


@pytest.mark.filterwarnings("ignore:.*prototype stage:UserWarning")
def test_torch_tensors_whose_memory_is_not_their_values_are_refused_naming_them():
    quantized = torch.quantize_per_tensor(torch.ones(4), 0.5, 0, torch.quint8)
    nested = torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)])
    for tensor in (quantized, nested):
        with pytest.raises(ValueError, match="`odd`"):
            st_pt.save({"fine": torch.zeros(2), "odd": tensor})


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental:UserWarning")
@pytest.mark.parametrize("dtype", [torch.complex128, torch.complex32])
def test_torch_dtypes_the_format_lacks_are_refused_naming_the_tensor(dtype, tmp_path):
    tensors = {"fine": torch.zeros(2), "odd": torch.zeros(2, dtype=dtype)}
    with pytest.raises(SafetensorError, match="odd"):
        st_pt.save(tensors)
    model = torch.nn.Module()
    model.register_buffer("odd", tensors["odd"])
    with pytest.raises(SafetensorError, match="odd"):
        st_pt.save_model(model, str(tmp_path / "m.safetensors"))
