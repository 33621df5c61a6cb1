"""Reading, against the reference 0.8: each package reads the other's files to equal tensors,
and `safe_open` agrees on keys, metadata, dtypes, shapes and `get_slice` results for random
index expressions (ints, negative ones, slices with steps, bounds out of range, `...`, `None`,
lists, too many indexes), errors included.

Differences allowed, as docs/FORMAT.md lists them ("Deliberate differences"):
- booleans as indexes are refused (SafetensorError) by both frameworks; the reference reads
  them as 0 and 1 for numpy and as torch does (a new axis) for torch;
- framework "np": where the reference fails inside (OverflowError for any negative slice
  bound or one beyond 64 bits, SystemError or ValueError for a range that ends before it
  starts), we give numpy's result, or SafetensorError where a bound is out of range by the
  reference's own rules;
- framework "pt": slice bounds beyond 64 bits clamp as Python's do (torch truncates them).
"""

import json
import math
import os
import struct

import pytest

import reference_oracle
from differential import (METADATA, SHAPES, TEXT, draw_torch_tensor, outcome, prop,
                          same_error)

REF, REF_TORCH, REF_NUMPY = reference_oracle.require()

import numpy as np  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import libsafetensors  # noqa: E402
import libsafetensors.numpy as our_numpy  # noqa: E402

try:
    import ml_dtypes
except ImportError:  # pragma: no cover - in the test venv
    ml_dtypes = None

try:
    import torch

    import libsafetensors.torch as our_torch
except ImportError:  # pragma: no cover - in the test venv
    torch = None

# dtypes both packages read as numpy arrays (the reference's numpy table).
NUMPY_READABLE = sorted(REF_NUMPY._TYPES)
# dtypes both read as torch tensors: the reference's torch table on this torch.
TORCH_READABLE = sorted(k for k, v in REF_TORCH._TYPES.items() if v is not None) if REF_TORCH \
    else []


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("differential_read")


def write(folder, name, blob):
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(blob)
    return path


def raw_array(draw, dtype_name, shape):
    dtype = np.dtype(REF_NUMPY._TYPES[dtype_name])
    size = math.prod(shape) * dtype.itemsize
    raw = draw(st.binary(min_size=size, max_size=size))
    if dtype == np.bool_:
        raw = bytes(b & 1 for b in raw)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


@st.composite
def numpy_dicts(draw):
    names = draw(st.lists(TEXT.filter(lambda t: "\0" not in t and t != "__metadata__"),
                          max_size=4, unique=True))
    return {name: raw_array(draw, draw(st.sampled_from(NUMPY_READABLE)), draw(SHAPES))
            for name in names}


def as_bytes(value):
    """The raw bytes and shape of a numpy array or torch tensor, for exact comparison."""
    if torch is not None and isinstance(value, torch.Tensor):
        shape = tuple(value.shape)
        flat = torch.empty(shape, dtype=value.dtype).copy_(value).reshape(-1)
        value = flat.view(torch.uint8).numpy() if flat.numel() else np.zeros(0, np.uint8)
        return shape, value.tobytes()
    return value.shape, np.ascontiguousarray(value).tobytes()


def assert_same_tensors(got, expected):
    assert list(got) == list(expected) or sorted(got) == sorted(expected)
    for name in expected:
        assert as_bytes(got[name]) == as_bytes(expected[name]), name
        assert str(got[name].dtype) == str(expected[name].dtype), name


def header_offsets(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return {k: tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__"}


def assert_same_handles(ours, theirs, path):
    assert ours.keys() == theirs.keys()
    # Difference: tensors starting at one offset (empty ones) come by end, then name; the
    # reference's order among them is random.
    offsets = header_offsets(path)
    assert ours.offset_keys() == sorted(theirs.offset_keys(), key=lambda n: (offsets[n], n))
    assert ours.metadata() == theirs.metadata()
    for name in theirs.keys():
        a, b = ours.get_slice(name), theirs.get_slice(name)
        assert a.get_shape() == b.get_shape() and a.get_dtype() == b.get_dtype()
        assert as_bytes(ours.get_tensor(name)) == as_bytes(theirs.get_tensor(name))


def save_both(scratch, ours, ref, tensors, metadata):
    """Saves `tensors` with both packages' `save`, checks that each loads the other's bytes,
    and writes both files: (the metadata both were given, our path, the reference's path)."""
    if not tensors and metadata == {}:
        metadata = None  # the reference cannot read back what it writes for this
    ours_blob = ours.save(tensors, metadata=metadata)
    ref_blob = ref.save(tensors, metadata=metadata)
    assert_same_tensors(ref.load(ours_blob), tensors)
    assert_same_tensors(ours.load(ref_blob), tensors)
    return (metadata, write(scratch, "ours.st", ours_blob), write(scratch, "ref.st", ref_blob))


@prop()
@given(tensors=numpy_dicts(), metadata=METADATA.filter(
    lambda m: m is None or not any("\0" in k + v for k, v in m.items())))
def test_each_reads_the_others_numpy_files(scratch, tensors, metadata):
    metadata, ours_path, ref_path = save_both(scratch, our_numpy, REF_NUMPY, tensors, metadata)
    for framework in ("np", "pt") if torch is not None else ("np",):
        if framework == "pt" and any(str(a.dtype) not in TORCH_NAMES for a in tensors.values()):
            continue
        for path in (ours_path, ref_path):
            with libsafetensors.safe_open(path, framework) as ours, \
                    REF.safe_open(path, framework) as theirs:
                assert_same_handles(ours, theirs, path)
                assert ours.metadata() == metadata
    assert_same_tensors(our_numpy.load_file(ref_path), REF_NUMPY.load_file(ours_path))


# numpy dtype names whose safetensors dtype torch reads in the reference too.
TORCH_NAMES = {str(np.dtype(REF_NUMPY._TYPES[k])) for k in TORCH_READABLE if k in REF_NUMPY._TYPES}


@st.composite
def torch_dicts(draw):
    names = draw(st.lists(TEXT.filter(lambda t: "\0" not in t and t != "__metadata__"),
                          max_size=4, unique=True))
    tensors = {}
    for name in names:
        dtype = REF_TORCH._TYPES[draw(st.sampled_from(TORCH_READABLE))]
        tensors[name] = draw_torch_tensor(draw, dtype, draw(SHAPES))
    return tensors


@pytest.mark.skipif(torch is None, reason="torch is not installed")
@prop()
@given(tensors=torch_dicts(), metadata=st.none() | st.dictionaries(
    TEXT.filter(lambda t: "\0" not in t), TEXT.filter(lambda t: "\0" not in t), max_size=2))
def test_each_reads_the_others_torch_files(scratch, tensors, metadata):
    metadata, ours_path, ref_path = save_both(scratch, our_torch, REF_TORCH, tensors, metadata)
    assert_same_tensors(our_torch.load_file(ref_path), REF_TORCH.load_file(ours_path))
    for path in (ours_path, ref_path):
        with libsafetensors.safe_open(path, "pt") as ours, REF.safe_open(path, "pt") as theirs:
            assert_same_handles(ours, theirs, path)


# ---------------------------------------------------------------------------------------------
# get_slice


def bound(size):
    return st.one_of(st.none(), st.integers(-size - 3, size + 3),
                     st.sampled_from([1 << 63, -(1 << 63) - 1, 1 << 70]))


@st.composite
def index_items(draw, size):
    kind = draw(st.integers(0, 19))
    if kind < 6:
        return draw(st.integers(-size - 2, size + 1))
    if kind < 15:
        step = draw(st.one_of(st.none(), st.integers(-1, 4), st.just(1 << 70)))
        return slice(draw(bound(size)), draw(bound(size)), step)
    return draw(st.sampled_from([Ellipsis, Ellipsis, None, True, False, []]))


@st.composite
def index_keys(draw, shape):
    count = draw(st.integers(0, len(shape) + 1))
    items = [draw(index_items(shape[i] if i < len(shape) else 2)) for i in range(count)]
    if draw(st.integers(0, 9)) == 0:
        return []  # an empty list alone
    if len(items) == 1 and draw(st.booleans()):
        return items[0]  # not a tuple
    return tuple(items)


def has_bool(key):
    return any(isinstance(item, bool) for item in (key if isinstance(key, tuple) else (key,)))


def numpy_result(array, key):
    try:
        return "ok", array[key]
    except Exception as error:  # noqa: BLE001
        return "error", error


@st.composite
def slice_cases(draw):
    shape = draw(st.lists(st.integers(0, 5), max_size=3))
    dtype = draw(st.sampled_from(["F32", "U8", "I64", "BF16", "F16"]))
    keys = draw(st.lists(index_keys(shape), min_size=1, max_size=8))
    return dtype, shape, keys


@prop()
@given(case=slice_cases(), backend=st.sampled_from(["mmap", "pread"]))
def test_get_slice_agrees_with_the_reference(scratch, case, backend):
    dtype, shape, keys = case
    if dtype == "BF16" and ml_dtypes is None:
        dtype = "F16"
    array = np.arange(math.prod(shape), dtype=np.uint8).reshape(shape)
    array = array.astype(ml_dtypes.bfloat16 if dtype == "BF16" else REF_NUMPY._TYPES[dtype])
    path = write(scratch, "slice.st", REF_NUMPY.save({"t": array}))
    frameworks = ("np", "pt") if torch is not None else ("np",)
    for framework in frameworks:
        with libsafetensors.safe_open(path, framework, backend=backend) as ours, \
                REF.safe_open(path, framework) as theirs:
            a, b = ours.get_slice("t"), theirs.get_slice("t")
            assert a.get_shape() == b.get_shape() == shape
            assert a.get_dtype() == b.get_dtype() == dtype
            for key in keys:
                mine, ref = outcome(lambda: a[key]), outcome(lambda: b[key])
                check_slice(framework, array, key, mine, ref)


def check_slice(framework, array, key, mine, ref):
    if has_bool(key):
        # Difference: booleans are refused.
        assert mine[0] == "error" and type(mine[1]).__name__ == "SafetensorError", (key, mine)
        return
    if framework == "pt" and _huge_slice_bound(key):
        if not _plain(key):
            # With None, lists or two ellipses both index with torch: the same garbage.
            assert mine[0] == ref[0], (key, mine, ref)
            assert (same_error(mine[1], ref[1]) if mine[0] == "error"
                    else mine[1].shape == ref[1].shape), (key, mine, ref)
            return
        if mine[0] == ref[0] == "error" and same_error(mine[1], ref[1]):
            return
        # Difference: plain keys' bounds clamp as Python's do; torch truncates them.
        expected = numpy_result(array, key)
        assert mine[0] == expected[0] == "ok", (key, mine, expected)
        assert as_bytes(mine[1]) == as_bytes(expected[1]), key
        return
    if mine[0] == ref[0] == "ok":
        assert as_bytes(mine[1]) == as_bytes(ref[1]), key
        return
    if mine[0] == ref[0] == "error" and same_error(mine[1], ref[1]):
        return
    # Differences, precisely.
    if framework == "np" and type(ref[1]) in (SystemError, OverflowError) or (
            type(ref[1]).__name__ == "PanicException") or (
            type(ref[1]) is ValueError and _reversed_range(key, array.shape)):
        # The reference fails inside: ours gives numpy's result, or SafetensorError where a
        # bound is out of range by the reference's own rules.
        expected = numpy_result(array, key)
        if mine[0] == "ok":
            assert expected[0] == "ok", (key, mine, expected)
            assert as_bytes(mine[1]) == as_bytes(expected[1]), key
        else:
            assert type(mine[1]).__name__ == "SafetensorError", (key, mine)
        return
    raise AssertionError(f"get_slice({key!r}) of shape {list(array.shape)} with framework "
                         f"{framework}: ours {mine}, the reference {ref}")


def _reversed_range(key, shape):
    items = list(key) if isinstance(key, tuple) else [key]
    at = next((i for i, item in enumerate(items) if item is Ellipsis), None)
    if at is not None:
        items[at:at + 1] = [slice(None)] * max(len(shape) - (len(items) - 1), 0)
    for item, size in zip(items, shape):
        if isinstance(item, slice) and item.step not in (None, 1):
            start, stop, _ = item.indices(size)
            if stop < start:
                return True
    return False


def _plain(key):
    items = key if isinstance(key, tuple) else (key,)
    return sum(item is Ellipsis for item in items) <= 1 and all(
        item is Ellipsis or isinstance(item, slice) or
        (isinstance(item, int) and not isinstance(item, bool)) for item in items)


def _huge_slice_bound(key):
    items = key if isinstance(key, tuple) else (key,)
    return any(isinstance(item, slice) and any(
        v is not None and not -(1 << 63) <= v < 1 << 63 for v in (item.start, item.stop, item.step))
        for item in items)


@pytest.mark.parametrize("framework", ["np", "pt"] if torch is not None else ["np"])
def test_a_reversed_range_gives_numpys_empty_result(scratch, framework):
    """[3:1, 1] of a [4, 5, 5] tensor (found by a 40,000-example run): numpy's empty (0, 5);
    the reference 0.8 panics inside its Rust code ("capacity overflow") or raises SystemError."""
    array = np.arange(100, dtype=np.uint8).reshape(4, 5, 5)
    path = write(scratch, "reversed.st", REF_NUMPY.save({"t": array}))
    for backend in ("mmap", "pread"):
        with libsafetensors.safe_open(path, framework, backend=backend) as ours, \
                REF.safe_open(path, framework) as theirs:
            for key in [(slice(3, 1), 1), (slice(3, 1),), (slice(None), slice(4, 2), 0)]:
                got = ours.get_slice("t")[key]
                assert tuple(got.shape) == array[key].shape, key
                check_slice(framework, array, key, ("ok", got),
                            outcome(lambda: theirs.get_slice("t")[key]))


@pytest.mark.parametrize("framework", ["np", "pt"] if torch is not None else ["np"])
def test_the_mismatches_a_gpu_run_found_are_gone(scratch, framework):
    # [:, 5:9] of a [3, 4] tensor: torch's empty [3, 0] (numpy: SafetensorError in both); [:]
    # of a 0-d tensor: torch's IndexError (numpy: SafetensorError in both).
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = write(scratch, "known.st", REF_NUMPY.save({"c": array, "s": np.array(3.0)}))
    for backend in ("mmap", "pread"):
        with libsafetensors.safe_open(path, framework, backend=backend) as ours, \
                REF.safe_open(path, framework) as theirs:
            for name, key in [("c", (slice(None), slice(5, 9))), ("s", slice(None))]:
                mine = outcome(lambda: ours.get_slice(name)[key])
                ref = outcome(lambda: theirs.get_slice(name)[key])
                assert mine[0] == ref[0], (name, key, mine, ref)
                if mine[0] == "ok":
                    assert as_bytes(mine[1]) == as_bytes(ref[1]) and mine[1].shape == (3, 0)
                else:
                    assert same_error(mine[1], ref[1]), (mine, ref)


@pytest.mark.skipif(torch is None or not hasattr(torch, "float4_e2m1fn_x2"),
                    reason="this torch has no float4_e2m1fn_x2")
def test_f4_slices_index_the_tensor_get_tensor_gives(scratch):
    # Difference (docs/FORMAT.md): the reference fails on F4 slices; ours index the packed
    # tensor as torch does.
    packed = torch.arange(24, dtype=torch.uint8).reshape(2, 3, 4).view(torch.float4_e2m1fn_x2)
    path = write(scratch, "f4.st", REF_TORCH.save({"f": packed}))
    with libsafetensors.safe_open(path, "pt") as ours, REF.safe_open(path, "pt") as theirs:
        whole = ours.get_tensor("f")
        assert as_bytes(whole) == as_bytes(theirs.get_tensor("f"))
        for key in [0, (slice(None), 1), (Ellipsis, slice(1, 3)), (1, 2, 3), slice(0, 9)]:
            with pytest.raises(RuntimeError):
                theirs.get_slice("f")[key]
            got = ours.get_slice("f")[key]
            assert got.dtype == packed.dtype and as_bytes(got) == as_bytes(packed[key]), key
