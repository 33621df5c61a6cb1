"""libsafetensors.torch: round trips for every dtype the installed torch has, zero-copy loading,
refusals of tensors that cannot be saved, files written by torch-side code."""

import gc
from pathlib import Path

import numpy as np
import pytest
import torch

import format_oracle
from libsafetensors import SafetensorError, safe_open
from libsafetensors.torch import load, load_checkpoint, load_file, save, save_file

# safetensors dtype -> torch attribute; those this torch lacks are skipped (visibly, with the
# reason), not failed and not left out of the parametrization.
TORCH_DTYPES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16",
    "I32": "int32", "U32": "uint32", "I64": "int64", "U64": "uint64", "F16": "float16",
    "BF16": "bfloat16", "F32": "float32", "F64": "float64", "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu",
}  # fmt: skip
AVAILABLE = {k: getattr(torch, v) for k, v in TORCH_DTYPES.items() if hasattr(torch, v)}
EVERY_DTYPE = [
    pytest.param(name, marks=pytest.mark.skipif(
        name not in AVAILABLE, reason=f"torch {torch.__version__} has no torch.{attribute}"))
    for name, attribute in sorted(TORCH_DTYPES.items())
]


def sample(dtype, shape=(3, 5)):
    """Distinct, exactly representable values: random bytes would make NaNs (NaN != NaN)."""
    count = int(np.prod(shape))
    if dtype == torch.bool:
        return (torch.arange(count) % 3 == 0).reshape(shape)
    values = torch.arange(count, dtype=torch.float32).remainder(7) - 3
    return values.to(dtype).reshape(shape)


def same_bytes(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


@pytest.mark.parametrize("name", EVERY_DTYPE)
def test_every_dtype_round_trips(name, path):
    dtype = AVAILABLE[name]
    tensors = {"matrix": sample(dtype), "scalar": sample(dtype, ()), "empty": sample(dtype, (0, 4))}
    save_file(tensors, path)
    with safe_open(path, framework="pt") as f:
        assert f.get_slice("matrix").get_dtype() == name
    for loaded in (load_file(path), load_file(path, backend="pread"), load(save(tensors))):
        assert list(loaded) == ["empty", "matrix", "scalar"]  # same dtype: by name
        for key, tensor in tensors.items():
            assert same_bytes(loaded[key], tensor), key


def test_header_is_byte_identical_to_reference_writer():
    out = save({"test": torch.ones((2, 2), dtype=torch.bfloat16)})
    assert out[:8] == b"@\x00\x00\x00\x00\x00\x00\x00"
    assert out[8:72] == b'{"test":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}}    '
    assert out[72:] == b"\x80?" * 4


def test_missing_torch_dtype_names_the_dtype(path):
    if hasattr(torch, "uint16"):
        pytest.skip("this torch has every integer dtype")
    with open(path, "wb") as f:
        f.write(format_oracle.encode({"u": ("U16", [2], b"\x01\x00\x02\x00")}))
    with safe_open(path, framework="pt") as f:
        with pytest.raises(SafetensorError, match=r"dtype U16 .*torch\.uint16 does not exist"):
            f.get_tensor("u")
    with safe_open(path, framework="np") as f:  # numpy has it
        assert f.get_tensor("u").tolist() == [1, 2]


def test_tensors_view_the_mapping_and_outlive_the_handle(path):
    save_file({"a": torch.arange(1000, dtype=torch.float32)}, path)
    with safe_open(path, framework="pt") as f:
        first = f.get_tensor("a")
        second = f.get_tensor("a")
    # Both views point into the same mapping: no copy was made.
    assert first.data_ptr() == second.data_ptr()
    del f, second
    gc.collect()
    assert first.sum().item() == sum(range(1000))


def test_writing_to_loaded_tensors_never_reaches_the_file(path):
    save_file({"a": torch.zeros(8)}, path)
    before = Path(path).read_bytes()
    for backend in ("mmap", "pread"):
        loaded = load_file(path, backend=backend)
        loaded["a"] += 1  # copy-on-write pages: must not crash nor change the file
        assert loaded["a"].tolist() == [1.0] * 8
    assert Path(path).read_bytes() == before
    assert load_file(path)["a"].tolist() == [0.0] * 8


def test_torch_side_files_are_read(path):
    # Written in the order given, not ours: a file from another exporter.
    weight = torch.randn(4, 3)
    bias = torch.arange(4, dtype=torch.int64)
    blob = format_oracle.encode({
        "weight": ("F32", [4, 3], weight.numpy().tobytes()),
        "bias": ("I64", [4], bias.numpy().tobytes()),
    }, metadata={"format": "pt"})
    with open(path, "wb") as f:
        f.write(blob)
    with safe_open(path, framework="pt") as f:
        assert f.keys() == ["bias", "weight"]
        assert f.offset_keys() == ["weight", "bias"]
        assert f.metadata() == {"format": "pt"}
        assert torch.equal(f.get_tensor("weight"), weight)
        assert torch.equal(f.get_tensor("bias"), bias)


def test_misaligned_data_is_copied_to_an_aligned_tensor(path):
    values = np.arange(6, dtype="<f8")
    with open(path, "wb") as f:
        f.write(format_oracle.encode({"x": ("F64", [6], values.tobytes())}, pad_to=1))
    tensor = load_file(path)["x"]
    assert tensor.data_ptr() % 8 == 0
    assert tensor.tolist() == values.tolist()


@pytest.mark.parametrize("pad_to", [8, 1])
def test_get_tensors_equals_get_tensor_for_every_layout(path, pad_to):
    """get_tensors() makes most tensors as strided views of one storage over the mapped data
    (as the reference does) and the rest one by one: both ways give get_tensor's tensors, for
    aligned and misaligned data, odd offsets, empty and 0-d tensors and every dtype."""
    rng = np.random.default_rng(0)
    raw = lambda n: rng.integers(0, 256, n, dtype=np.uint8).tobytes()  # noqa: E731
    blob = format_oracle.encode({
        "a.u8": ("U8", [3], raw(3)),                # leaves the next tensor at an odd offset
        "b.f32": ("F32", [2, 3], raw(24)),
        "c.empty": ("F16", [0, 4], b""),
        "d.scalar": ("F64", [], raw(8)),
        "e.bf16": ("BF16", [5, 1, 2], raw(20)),
        "f.i64": ("I64", [2], raw(16)),
        "g.bool": ("BOOL", [4], bytes([0, 1, 1, 0])),
    }, pad_to=pad_to)
    with open(path, "wb") as f:
        f.write(blob)
    with safe_open(path, framework="pt") as f:
        one_by_one = {name: f.get_tensor(name) for name in f.offset_keys()}
        at_once = f.get_tensors()
    assert list(at_once) == list(one_by_one)
    for name, want in one_by_one.items():
        got = at_once[name]
        assert (got.dtype, got.shape) == (want.dtype, want.shape), name
        raw_bytes = lambda t: t.reshape(-1).view(torch.uint8).tolist()  # noqa: E731
        assert raw_bytes(got) == raw_bytes(want), name
        assert got.is_contiguous() and got.data_ptr() % got.element_size() == 0, name
    at_once["b.f32"].zero_()  # copy-on-write: the file and the other tensors keep their bytes
    assert Path(path).read_bytes() == blob
    assert at_once["e.bf16"].view(torch.uint8).tolist() == \
        one_by_one["e.bf16"].view(torch.uint8).tolist()


def test_get_tensors_makes_one_by_one_what_torch_refuses_as_a_view(path, monkeypatch):
    """A strided view torch refuses is made the way get_tensor makes it, not lost to torch's
    error."""
    tensors = {"a": sample(torch.float32, (4, 3)), "b": sample(torch.bfloat16, (7,)),
               "c": sample(torch.int64, (2, 2, 2))}
    save_file(tensors, path)

    def refuse(*args, **kwargs):
        raise RuntimeError("as_strided refused (test)")

    monkeypatch.setattr(torch.Tensor, "as_strided", refuse)
    loaded = load_file(path)
    assert sorted(loaded) == sorted(tensors)
    for name, want in tensors.items():
        assert loaded[name].dtype == want.dtype and torch.equal(loaded[name], want), name


def test_refusals_use_the_reference_exception_types(path):
    with pytest.raises(ValueError, match="sparse"):
        save_file({"s": torch.sparse_coo_tensor(size=(2, 3))}, path)
    with pytest.raises(ValueError, match="non contiguous"):
        save_file({"t": torch.zeros(3, 4).t()}, path)
    base = torch.zeros(4, 4)
    with pytest.raises(RuntimeError, match="share memory"):
        save_file({"a": base, "b": base[1:]}, path)
    save_file({"a": base[:2], "b": base[2:]}, path)  # disjoint views of one storage are fine
    with pytest.raises(RuntimeError, match="Cannot copy out of meta tensor"):
        save_file({"m": torch.zeros(2, device="meta")}, path)
    with pytest.raises(ValueError, match="Expected a dict"):
        save_file([torch.zeros(1)], path)


def test_devices_are_validated(path):
    save_file({"a": torch.zeros(2)}, path)
    with pytest.raises(SafetensorError, match="device nowhere:0 is invalid"):
        safe_open(path, framework="pt", device="nowhere:0")
    with pytest.raises(SafetensorError, match="not supported for framework numpy"):
        safe_open(path, framework="np", device="cuda:0")
    with safe_open(path, framework="pt", device={"": "cpu"}) as f:
        assert f.get_tensor("a").device == torch.device("cpu")


def _pt_round_trip(tensors, tmp_path):
    target = tmp_path / "resaved.pt"
    torch.save(tensors, target)
    return torch.load(target), target.stat().st_size


LOADS_FOR_TORCH_SAVE = {
    "load_file": lambda path: load_file(path),
    "load_checkpoint": lambda path: load_checkpoint(path),
    "load_checkpoint_copy": lambda path: load_checkpoint(path, copy=True),
    "load_checkpoint_bf16": lambda path: load_checkpoint(path, dtype=torch.bfloat16),
}


@pytest.mark.parametrize("how", sorted(LOADS_FOR_TORCH_SAVE))
def test_loaded_tensors_of_several_dtypes_can_be_saved_with_torch(tmp_path, how):
    # torch.save refuses tensors of different dtypes viewing one storage ("Cannot save multiple
    # tensors or storages that view the same data as different types"), as after
    # load_state_dict(assign=True) and save_pretrained(safe_serialization=False).
    data = {"w": torch.randn(64, 64), "h": torch.randn(32).to(torch.float16),
            "b": torch.randn(16).to(torch.bfloat16), "i": torch.arange(8),
            "mask": torch.tensor([True, False]), "empty": torch.zeros(0, 4)}
    path = tmp_path / "mixed.safetensors"
    save_file(data, path)
    loaded = LOADS_FOR_TORCH_SAVE[how](path)
    reloaded, size = _pt_round_trip(loaded, tmp_path)
    assert set(reloaded) == set(data)
    for name, tensor in loaded.items():
        assert reloaded[name].dtype == tensor.dtype and torch.equal(reloaded[name], tensor), name
    # The writer groups tensors by dtype, so no byte is stored twice in the .pt.
    assert size < path.stat().st_size + 8192


def test_interleaved_dtypes_can_be_saved_with_torch(tmp_path):
    """A header whose dtypes alternate (other writers' order) still loads into tensors that
    torch.save accepts."""
    entries = [("a", "F32", [4], torch.arange(4, dtype=torch.float32)),
               ("b", "F16", [4], torch.arange(4, dtype=torch.float16)),
               ("c", "F32", [2], torch.tensor([7.0, 8.0])),
               ("d", "F16", [2], torch.tensor([1.5, 2.5], dtype=torch.float16))]
    path = tmp_path / "interleaved.safetensors"
    path.write_bytes(format_oracle.encode({n: (d, s, t.numpy().tobytes()) for n, d, s, t in entries}))
    loaded = load_file(path)
    reloaded, _ = _pt_round_trip(loaded, tmp_path)
    for name, _, _, tensor in entries:
        assert torch.equal(reloaded[name], tensor), name
