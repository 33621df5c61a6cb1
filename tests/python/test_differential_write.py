"""Writing, against the reference 0.8: for random dicts of tensors (every dtype both packages
support, torch and numpy flavours, 0-d and empty shapes, random names and metadata),
`save` and `save_file` give the reference's bytes, or both refuse with the same kind of error.

The only differences allowed are the ones docs/FORMAT.md lists ("Deliberate differences from
the reference"), each checked here precisely:
- metadata keys are written sorted (the reference's order is random with two or more keys);
- empty metadata and no tensors give a readable file (the reference writes a broken header);
- a tensor named `__metadata__` is refused (the reference writes a file it cannot read back);
- NUL characters in tensor names or metadata are refused (the reference writes them);
- a torch dtype the format lacks raises SafetensorError (the reference: KeyError).
Each property also draws, now and then, a tensor that is not contiguous or two names for one
tensor (torch), or a big-endian array (numpy), where both must refuse or both convert.
"""

import math
import os

import pytest

import reference_oracle
from differential import (METADATA, NAMES, SHAPES, draw_torch_tensor, outcome, prop,
                          same_error, split_metadata)

REF, REF_TORCH, REF_NUMPY = reference_oracle.require()

import numpy as np  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import libsafetensors.numpy as our_numpy  # noqa: E402

try:
    import ml_dtypes
except ImportError:  # pragma: no cover - in the test venv
    ml_dtypes = None


# save_file as well as save for one example in four: ours flushes every file to disk, and
# the writes would otherwise take most of the suite's time.
TO_FILE = st.integers(0, 3).map(lambda n: n == 0)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("differential_write")


def _sort_key(text):
    return text.encode("utf-8")


def assert_same_file(ours, ref, tensors, metadata):
    """`ours` and `ref` (bytes written by each package) agree up to the listed differences."""
    if ours == ref:
        return
    if not tensors and metadata == {}:
        # Difference: the reference writes '{},"__metadata__":{}}', which nothing can read.
        assert ref[8:].rstrip(b" ") == b'{},"__metadata__":{}}'
        assert ours[8:].rstrip(b" ") == b'{"__metadata__":{}}'
        return
    # Difference: metadata keys in sorted order, the reference's being random. The rest of
    # the header, its length (so the padding) and the data are the same.
    assert metadata is not None and len(metadata) >= 2, "the bytes differ"
    assert len(ours) == len(ref)
    our_text, our_meta, our_data = split_metadata(ours)
    ref_text, ref_meta, ref_data = split_metadata(ref)
    assert our_text == ref_text and our_data == ref_data
    assert dict(our_meta) == dict(ref_meta) == metadata
    assert [k for k, _ in our_meta] == sorted(metadata, key=_sort_key)


def _unsupported_torch(tensors):
    return any(getattr(t, "dtype", None) in UNSUPPORTED_TORCH for t in tensors.values())


def _our_refusals(tensors, metadata):
    """(exception type name, text of its message) for each listed difference that applies."""
    reasons = []
    if "__metadata__" in tensors:
        reasons.append(("SafetensorError", "reserved"))
    if _has_nul(tensors, metadata):
        reasons.append(("SafetensorError", "null byte"))
    if _unsupported_torch(tensors):
        reasons.append(("SafetensorError", "dtype"))
        # The reference fails on the dtype before it looks at sharing or contiguity; we look
        # at those first.
        if len({id(t) for t in tensors.values()}) < len(tensors):
            reasons.append(("RuntimeError", "share memory"))
        if not all(t.is_contiguous() for t in tensors.values()):
            reasons.append(("ValueError", "non contiguous"))
    return reasons


def _has_nul(tensors, metadata):
    texts = list(tensors) + [t for kv in (metadata or {}).items() for t in kv]
    return any("\0" in t for t in texts)


def check_writers(ours_save, ref_save, ours_save_file, ref_save_file, tensors, metadata,
                  folder, to_file):
    mine = outcome(lambda: ours_save(tensors, metadata=metadata))
    theirs = outcome(lambda: ref_save(tensors, metadata=metadata))
    if mine[0] == theirs[0] == "error" and same_error(mine[1], theirs[1]):
        return
    if mine[0] != "ok" or theirs[0] != "ok":
        # Differences: we refuse, for one of the listed reasons that applies to this input...
        reasons = _our_refusals(tensors, metadata)
        assert mine[0] == "error" and any(
            type(mine[1]).__name__ == kind and text in str(mine[1]) for kind, text in reasons), (
                mine, theirs, reasons)
        # ...and the reference writes the file, or fails on a dtype the format lacks.
        if theirs[0] == "error":
            assert isinstance(theirs[1], KeyError) and _unsupported_torch(tensors), theirs
        elif "__metadata__" in tensors:
            with pytest.raises(Exception, match="JSON"):  # noqa: B017 - the reference's type
                REF.deserialize(theirs[1])  # it cannot read back what it wrote
        return
    assert_same_file(mine[1], theirs[1], tensors, metadata)
    if not to_file:
        return
    ours_path, ref_path = os.path.join(folder, "ours.st"), os.path.join(folder, "ref.st")
    ours_save_file(tensors, ours_path, metadata=metadata)
    ref_save_file(tensors, ref_path, metadata=metadata)
    with open(ours_path, "rb") as f, open(ref_path, "rb") as g:
        our_file, ref_file = f.read(), g.read()
    assert our_file == mine[1]  # save_file writes what save returns
    assert_same_file(our_file, ref_file, tensors, metadata)


# ---------------------------------------------------------------------------------------------
# torch flavour

UNSUPPORTED_TORCH = []
if REF_TORCH is not None:
    import torch

    import libsafetensors.torch as our_torch

    # Every torch dtype the reference can write (its own table, on this torch), and two the
    # format lacks, which both refuse.
    TORCH_DTYPES = sorted((d for d in REF_TORCH._SIZE if d is not None), key=str)
    UNSUPPORTED_TORCH = [d for d in (torch.complex128, getattr(torch, "complex32", None))
                         if d is not None]


@st.composite
def torch_tensors(draw):
    dtype = draw(st.sampled_from(TORCH_DTYPES + UNSUPPORTED_TORCH))
    shape = draw(SHAPES)
    tensor = draw_torch_tensor(draw, dtype, shape)
    if len(shape) >= 2 and shape[0] > 1 and shape[1] > 1 and draw(st.integers(0, 19)) == 0:
        tensor = tensor.transpose(0, 1)  # not contiguous: both refuse it
    return tensor


@st.composite
def torch_dicts(draw):
    tensors = draw(st.dictionaries(NAMES, torch_tensors(), max_size=4))
    if tensors and draw(st.integers(0, 19)) == 0:
        # Two names for one tensor: both refuse shared memory.
        tensors[draw(NAMES)] = tensors[draw(st.sampled_from(sorted(tensors)))]
    return tensors


@pytest.mark.skipif(REF_TORCH is None, reason="torch is not installed")
@prop()
@given(tensors=torch_dicts(), metadata=METADATA, to_file=TO_FILE)
def test_torch_save_bytes_equal_reference(scratch, tensors, metadata, to_file):
    check_writers(our_torch.save, REF_TORCH.save, our_torch.save_file, REF_TORCH.save_file,
                  tensors, metadata, scratch, to_file)


# ---------------------------------------------------------------------------------------------
# numpy flavour

# (complex128 and ml_dtypes' int4 are not in the format: both refuse them.)
NUMPY_DTYPES = [np.dtype(n) for n in ("bool", "int8", "uint8", "int16", "uint16", "int32",
                                      "uint32", "int64", "uint64", "float16", "float32",
                                      "float64", "complex64", "complex128")]
if ml_dtypes is not None:
    NUMPY_DTYPES += [np.dtype(getattr(ml_dtypes, n)) for n in (
        "bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu", "float8_e4m3fnuz",
        "float8_e5m2fnuz", "int4") if hasattr(ml_dtypes, n)]


@st.composite
def numpy_arrays(draw):
    dtype = draw(st.sampled_from(NUMPY_DTYPES))
    shape = draw(SHAPES)
    size = math.prod(shape) * dtype.itemsize
    raw = draw(st.binary(min_size=size, max_size=size))
    if dtype == np.bool_:
        raw = bytes(b & 1 for b in raw)
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if dtype.itemsize > 1 and dtype.kind in "iufc" and draw(st.booleans()):
        array = array.astype(dtype.newbyteorder(">"))  # both write it little-endian
    return array


@prop()
@given(tensors=st.dictionaries(NAMES, numpy_arrays(), max_size=4), metadata=METADATA,
       to_file=TO_FILE)
def test_numpy_save_bytes_equal_reference(scratch, tensors, metadata, to_file):
    check_writers(our_numpy.save, REF_NUMPY.save, our_numpy.save_file, REF_NUMPY.save_file,
                  tensors, metadata, scratch, to_file)
