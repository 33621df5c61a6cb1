"""load_checkpoint (torch and numpy) and load_file(dtype=...): the parallel loader seen from
Python, its dtype conversion compared bit for bit with torch's `.to(dtype)`."""

import json
import os

import numpy as np
import pytest
import torch

import libsafetensors.numpy as st_numpy
from libsafetensors import Checkpoint, SafetensorError
from libsafetensors.torch import load_checkpoint, load_file, save_file, storage_ptr, storage_size

BITS = {torch.float32: (torch.int32, np.uint32), torch.float16: (torch.int16, np.uint16),
        torch.bfloat16: (torch.int16, np.uint16)}  # fmt: skip


def from_bits(bits, dtype):
    """A tensor of `dtype` with exactly the given bit patterns."""
    int_dtype, np_bits = BITS[dtype]
    raw = np.asarray(bits, dtype=np.uint64).astype(np_bits)
    return torch.from_numpy(raw.view(np.dtype(str(int_dtype).split(".")[-1]))).view(dtype)


def f32_cases():
    """Floats where rounding to 16 bits is delicate, then random bit patterns."""
    special = [
        0x00000000, 0x80000000, 0x3F800000, 0xBF800000,  # ±0, ±1
        0x7F800000, 0xFF800000,  # ±inf
        0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FBFFFFF, 0x7FC00001, 0xFFFFFFFF,  # NaNs
        0x00000001, 0x807FFFFF, 0x00800000,  # F32 subnormals, smallest normal
        0x477FE000, 0x477FEFFF, 0x477FF000, 0x47800000,  # around the F16 maximum 65504
        0x33800000, 0x33000000, 0x33000001, 0x33C00000, 0x38800000, 0x387FC000,  # F16 subnormals
        0x3F808000, 0x3F818000, 0x3F808001, 0x3F80FFFF, 0x3F817FFF,  # BF16 ties and near ties
        0x3F801000, 0x3F803000, 0x3F801001,  # F16 ties
        0x7F7FFFFF, 0x7F7F8000, 0xFF7FFFFF,  # F32 maximum: rounds to BF16 infinity
    ]  # fmt: skip
    # Every exponent with mantissas at the rounding boundaries of both 16-bit formats.
    structured = [(sign << 31) | (exponent << 23) | mantissa
                  for sign in (0, 1) for exponent in range(256)
                  for mantissa in (0, 1, 0x1000, 0x1001, 0x2000, 0x3000, 0x8000, 0x18000,
                                   0x7FFFFF, 0x7FE000)]  # fmt: skip
    rng = np.random.default_rng(5)
    random = rng.integers(0, 2**32, size=20000, dtype=np.uint64).tolist()
    return from_bits(special + structured + random, torch.float32)


def all_16_bit(dtype):
    return from_bits(range(2**16), dtype)


def bits_of(tensor):
    return tensor.view(BITS[tensor.dtype][0])


# We follow torch 2, whose F16 narrowing keeps the sign and top payload of a NaN; torch 1.13
# gives every NaN as the canonical 0x7E00 (README, "Casts"). Against torch 1 both sides' F16
# NaNs are made canonical before the bits are compared.
TORCH_NARROWS_NANS_CANONICALLY = int(torch.__version__.split(".")[0]) < 2


def canonical_f16_nans(tensor):
    bits = bits_of(tensor).clone()
    nan = (bits & 0x7FFF) > 0x7C00
    bits[nan] = (bits[nan] & -0x8000) | 0x7E00
    return bits.view(torch.float16)


@pytest.fixture
def sources(tmp_path):
    path = str(tmp_path / "cast.safetensors")
    tensors = {"f32": f32_cases(), "f16": all_16_bit(torch.float16),
               "bf16": all_16_bit(torch.bfloat16)}
    save_file(tensors, path)
    return path, tensors


@pytest.mark.parametrize("target", [torch.float16, torch.bfloat16, torch.float32])
def test_conversion_is_bit_identical_to_torch(sources, target):
    path, tensors = sources
    loaded = load_checkpoint(path, dtype=target)
    for name, source in tensors.items():
        assert loaded[name].dtype == target
        expected = source.to(target)
        got = loaded[name]
        if target == torch.float16 and TORCH_NARROWS_NANS_CANONICALLY:
            expected, got = canonical_f16_nans(expected), canonical_f16_nans(got)
        differ = (bits_of(got) != bits_of(expected)).nonzero().flatten()
        assert differ.numel() == 0, (
            f"{name} -> {target}: {differ.numel()} differ, first inputs (bits) "
            f"{bits_of(source)[differ[:5]].tolist()} gave {bits_of(got)[differ[:5]].tolist()}, "
            f"torch {bits_of(expected)[differ[:5]].tolist()}")


@pytest.mark.skipif(not hasattr(torch, "float8_e4m3fn"), reason="this torch has no float8")
@pytest.mark.parametrize("target", [torch.float16, torch.bfloat16, torch.float32])
def test_float8_conversion_is_bit_identical_to_torch(tmp_path, target):
    path = str(tmp_path / "f8.safetensors")
    every = torch.arange(256, dtype=torch.int16).to(torch.uint8)
    # Two storages: torch 2 refuses to save views of one storage under two names.
    tensors = {"e4m3": every.clone().view(torch.float8_e4m3fn),
               "e5m2": every.clone().view(torch.float8_e5m2)}
    save_file(tensors, path)
    loaded = load_checkpoint(path, dtype=target)
    for name, source in tensors.items():
        assert torch.equal(bits_of(loaded[name]), bits_of(source.to(target))), name


def test_other_dtypes_are_not_converted(tmp_path):
    path = str(tmp_path / "mixed.safetensors")
    tensors = {"i64": torch.arange(-3, 3), "u8": torch.arange(7, dtype=torch.uint8),
               "flag": torch.tensor([True, False]),
               "f64": torch.tensor([1.0 / 3, -2.5], dtype=torch.float64)}
    save_file(tensors, path)
    for dtype in (None, torch.float16):
        loaded = load_checkpoint(path, dtype=dtype)
        for name, tensor in tensors.items():
            assert loaded[name].dtype == tensor.dtype
            assert torch.equal(loaded[name], tensor)


def sample():
    torch.manual_seed(1)
    return {"emb": torch.randn(7, 5), "h.0.w": torch.randn(5, 5).half(),
            "h.0.b": torch.randn(5).bfloat16(), "h.1.w": torch.randn(5, 5), "h.1.b": torch.randn(5),
            "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3), "ids": torch.arange(4)}


def write_shards(directory, tensors, per_shard=3):
    """Splits `tensors` over files of `per_shard` tensors plus a transformers-style index."""
    os.makedirs(directory, exist_ok=True)
    names = sorted(tensors)
    groups = [names[i:i + per_shard] for i in range(0, len(names), per_shard)]
    weight_map = {}
    for i, group in enumerate(groups):
        shard = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        save_file({n: tensors[n] for n in group}, os.path.join(directory, shard))
        weight_map.update({n: shard for n in group})
    total = sum(t.nelement() * t.element_size() for t in tensors.values())
    index = os.path.join(directory, "model.safetensors.index.json")
    with open(index, "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    return index


def assert_same(loaded, tensors):
    assert list(loaded) == sorted(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype, name
        assert loaded[name].shape == tensor.shape, name
        assert torch.equal(loaded[name], tensor), name


def test_single_file_directory_and_index_load_the_saved_values(tmp_path):
    tensors = sample()
    single = str(tmp_path / "one.safetensors")
    save_file(tensors, single)
    index = write_shards(str(tmp_path / "sharded"), tensors)
    for path in (single, str(tmp_path / "sharded"), index, Checkpoint(index)):
        assert_same(load_checkpoint(path), tensors)


def bytes_spanned(loaded):
    """From the first byte of any tensor to the last: about their total size when they were
    read into one allocation."""
    spans = [(t.data_ptr(), t.nelement() * t.element_size()) for t in loaded.values()
             if t.nelement()]
    return max(at + n for at, n in spans) - min(at for at, _ in spans)


def test_tensors_share_one_buffer_of_their_bytes(tmp_path):
    tensors = sample()
    index = write_shards(str(tmp_path / "sharded"), tensors)
    loaded = load_checkpoint(index, copy=True)
    size = bytes_spanned(loaded)
    payload = sum(t.nelement() * t.element_size() for t in tensors.values())
    assert payload <= size <= payload + 64 * len(tensors)
    # Each tensor has a storage of its own bytes, as the reference's do (torch.save refuses
    # tensors of different dtypes viewing one storage).
    for name, tensor in loaded.items():
        assert storage_size(tensor) == tensor.nelement() * tensor.element_size(), name
        assert storage_ptr(tensor) == tensor.data_ptr() or not tensor.nelement(), name
    # The buffer belongs to torch: writing changes neither the file nor a second load.
    loaded["emb"].zero_()
    assert torch.equal(load_checkpoint(index)["emb"], tensors["emb"])


def test_tensors_as_stored_are_the_shards_pages(tmp_path):
    tensors = sample()
    index = write_shards(str(tmp_path / "sharded"), tensors)
    loaded = load_checkpoint(index)
    assert list(loaded) == sorted(tensors)
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor), name
    # Views of each shard's mapping: a tensor lies where its shard's data lies, not in one
    # buffer with the others.
    checkpoint = Checkpoint(index)
    spans = {}
    for name, tensor in loaded.items():
        if tensor.nelement():
            begin = tensor.data_ptr()
            low, high = spans.get(checkpoint.info(name)[0], (begin, begin))
            spans[checkpoint.info(name)[0]] = (min(low, begin), max(high, begin + tensor.numel() * tensor.element_size()))
    assert len(spans) > 1
    for shard, (low, high) in spans.items():
        assert high - low <= os.path.getsize(shard), shard
    assert len({storage_ptr(t) for t in loaded.values() if t.nelement()}) > 1
    # Copy-on-write: writing changes neither the file nor a second load.
    loaded["emb"].zero_()
    assert torch.equal(load_checkpoint(index)["emb"], tensors["emb"])
    assert torch.equal(load_checkpoint(index, copy=True)["emb"], tensors["emb"])


def test_converted_sizes(tmp_path):
    tensors = sample()
    path = str(tmp_path / "one.safetensors")
    save_file(tensors, path)
    loaded = load_checkpoint(path, dtype=torch.bfloat16)
    floats = [n for n, t in tensors.items() if t.is_floating_point()]
    for name, tensor in tensors.items():
        expected = tensor.to(torch.bfloat16) if name in floats else tensor
        assert loaded[name].dtype == expected.dtype and loaded[name].shape == expected.shape
        assert torch.equal(loaded[name], expected), name
    size = bytes_spanned(loaded)
    payload = sum(t.nelement() * (2 if n in floats else t.element_size())
                  for n, t in tensors.items())
    assert payload <= size <= payload + 64 * len(tensors)


def test_names_select_by_list_and_glob(tmp_path):
    tensors = sample()
    index = write_shards(str(tmp_path / "sharded"), tensors)
    assert_same(load_checkpoint(index, names=["ids", "h.1.w"]),
                {n: tensors[n] for n in ("ids", "h.1.w")})
    assert_same(load_checkpoint(index, names="h.*.b"), {n: tensors[n] for n in ("h.0.b", "h.1.b")})
    assert_same(load_checkpoint(index, names="h.?.w", dtype=torch.float32),
                {n: tensors[n].float() for n in ("h.0.w", "h.1.w")})
    assert load_checkpoint(index, names="nothing*") == {}
    assert load_checkpoint(index, names=[]) == {}


def test_absent_name_is_an_error(tmp_path):
    index = write_shards(str(tmp_path / "sharded"), sample())
    with pytest.raises(SafetensorError, match="no tensor `h.9.w` to load"):
        load_checkpoint(index, names=["emb", "h.9.w"])


def test_thread_counts_give_identical_results(tmp_path):
    torch.manual_seed(2)
    # Large enough that the loader cuts tensors into pieces spread over the threads.
    tensors = {f"layer.{i}": torch.randn(1024, 1024 + i) for i in range(3)}
    tensors["small"] = torch.randn(17)
    index = write_shards(str(tmp_path / "sharded"), tensors, per_shard=2)
    for dtype in (None, torch.bfloat16, torch.float16):
        one = load_checkpoint(index, dtype=dtype, threads=1)
        four = load_checkpoint(index, dtype=dtype, threads=4)
        default = load_checkpoint(index, dtype=dtype)
        for name, tensor in tensors.items():
            expected = tensor if dtype is None else tensor.to(dtype)
            assert torch.equal(bits_of(one[name]), bits_of(expected)), name
            assert torch.equal(bits_of(four[name]), bits_of(expected)), name
            assert torch.equal(bits_of(default[name]), bits_of(expected)), name


def test_argument_errors(tmp_path):
    path = str(tmp_path / "one.safetensors")
    save_file(sample(), path)
    with pytest.raises(ValueError, match="dtype torch.int8 cannot be loaded into"):
        load_checkpoint(path, dtype=torch.int8)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        load_checkpoint(path, threads=0)
    with pytest.raises(SafetensorError, match="device nowhere is invalid"):
        load_checkpoint(path, device="nowhere")


def test_device_map(tmp_path):
    path = str(tmp_path / "one.safetensors")
    tensors = sample()
    save_file(tensors, path)
    loaded = load_checkpoint(path, device={"h.0": "meta", "": "cpu"})
    assert loaded["h.0.w"].device.type == "meta" and loaded["h.0.b"].device.type == "meta"
    assert loaded["emb"].device.type == "cpu" and torch.equal(loaded["emb"], tensors["emb"])


def test_load_file_with_dtype_converts_and_without_stays_zero_copy(tmp_path):
    path = str(tmp_path / "one.safetensors")
    tensors = sample()
    save_file(tensors, path)
    plain = load_file(path)
    assert_same(dict(sorted(plain.items())), tensors)
    for dtype in (torch.float16, torch.bfloat16):
        converted = load_file(path, dtype=dtype)
        positional = load_file(path, "cpu", dtype)
        for name, tensor in tensors.items():
            expected = tensor.to(dtype) if tensor.is_floating_point() else tensor
            assert torch.equal(converted[name], expected), name
            assert torch.equal(positional[name], expected), name


def test_numpy_load_checkpoint(tmp_path):
    torch.manual_seed(3)
    tensors = {"a": torch.randn(4, 6), "b": torch.randn(3).half(), "i": torch.arange(5),
               "c": torch.randn(2, 2).double()}
    index = write_shards(str(tmp_path / "sharded"), tensors, per_shard=2)
    loaded = st_numpy.load_checkpoint(index)
    assert list(loaded) == sorted(tensors)
    for name, tensor in tensors.items():
        np.testing.assert_array_equal(loaded[name], tensor.numpy())
        assert loaded[name].dtype == tensor.numpy().dtype
    half = st_numpy.load_checkpoint(index, dtype=np.float16, names=["a", "b", "c", "i"])
    torch_half = load_checkpoint(index, dtype=torch.float16)
    for name in ("a", "b", "i"):
        np.testing.assert_array_equal(half[name], torch_half[name].numpy())
    assert half["c"].dtype == np.float64  # F64 is not one of the converted dtypes
    single = str(tmp_path / "one.safetensors")
    save_file(tensors, single)
    as_f32 = st_numpy.load_checkpoint(single, dtype="float32", names="?")
    assert {n: a.dtype for n, a in as_f32.items()} == {
        "a": np.float32, "b": np.float32, "c": np.float64, "i": np.int64}
    np.testing.assert_array_equal(as_f32["b"], tensors["b"].float().numpy())
    # As stored, the arrays are the shards' pages (writable, copy-on-write); copy=True gives
    # one buffer of their bytes.
    assert len({a.__array_interface__["data"][0] // (1 << 12) for a in loaded.values()}) > 1
    loaded["a"][...] = 0
    np.testing.assert_array_equal(st_numpy.load_checkpoint(index)["a"], tensors["a"].numpy())
    copied = st_numpy.load_checkpoint(index, copy=True)
    bases = {id(a.base if a.base is not None else a) for a in copied.values()}
    assert len(bases) == 1
    for name, tensor in tensors.items():
        np.testing.assert_array_equal(copied[name], tensor.numpy())


def test_numpy_bfloat16_needs_ml_dtypes(tmp_path):
    path = str(tmp_path / "one.safetensors")
    save_file({"w": torch.randn(3).bfloat16()}, path)
    try:
        import ml_dtypes
    except ImportError:
        ml_dtypes = None
    if ml_dtypes is None:
        with pytest.raises(SafetensorError, match="ml_dtypes"):
            st_numpy.load_checkpoint(path, dtype="bfloat16")
        with pytest.raises(SafetensorError, match="install ml_dtypes"):
            st_numpy.load_checkpoint(path)
        np.testing.assert_array_equal(st_numpy.load_checkpoint(path, dtype=np.float32)["w"],
                                      load_checkpoint(path, dtype=torch.float32)["w"].numpy())
    else:
        loaded = st_numpy.load_checkpoint(path, dtype=ml_dtypes.bfloat16)
        assert loaded["w"].dtype == ml_dtypes.bfloat16
    with pytest.raises(ValueError, match="cannot be loaded into"):
        st_numpy.load_checkpoint(path, dtype=np.int8)


def test_materialize_reads_every_page_first_and_changes_no_value(tmp_path):
    path = str(tmp_path / "m.safetensors")
    g = torch.Generator().manual_seed(3)
    tensors = {"big": torch.randn(3 << 20, generator=g), "small": torch.arange(7),
               "empty": torch.zeros(0, 5)}
    save_file(tensors, path)
    lazy = load_file(path)
    eager = load_file(path, materialize=True)
    assert list(eager) == list(lazy)
    for name, tensor in tensors.items():
        assert torch.equal(eager[name], tensor) and torch.equal(lazy[name], tensor)
    # Still zero-copy views of the private mapping: writing changes neither the file nor
    # another load.
    eager["small"][0] = 100
    assert load_file(path, materialize=True)["small"][0] == 0
    arrays = st_numpy.load_file(path, materialize=True)
    np.testing.assert_array_equal(arrays["big"], tensors["big"].numpy())


def test_materialize_reports_a_file_that_shrank_after_opening(tmp_path):
    from libsafetensors import safe_open

    path = str(tmp_path / "shrinks.safetensors")
    save_file({"w": torch.ones(1 << 20)}, path)
    with safe_open(path, "pt") as f:
        os.truncate(path, 4096)
        with pytest.raises(SafetensorError, match="did the file shrink"):
            f._populate()
