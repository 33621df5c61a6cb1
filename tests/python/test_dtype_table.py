"""The dtype dictionaries of the Python layer are views of the extension's one table
(`_core.dtypes()`): every safetensors dtype is in it once, and each framework name it gives
leads back to the same dtype, under whichever torch and numpy are installed."""

import numpy as np
import pytest
import torch

from libsafetensors import SafetensorError, _convert, _core
from libsafetensors import torch as st_torch

# FORMAT.md's dtypes with their bits per element, written out here as the oracle.
FORMAT_DTYPES = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32,
    "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip
RECORDS = {record[0]: record for record in _core.dtypes()}


def test_every_format_dtype_has_one_record():
    names = [record[0] for record in _core.dtypes()]
    assert sorted(names) == sorted(FORMAT_DTYPES)
    assert len(names) == len(set(names))
    assert {name: record[1] for name, record in RECORDS.items()} == FORMAT_DTYPES
    assert _convert.DTYPE_BITS == FORMAT_DTYPES


@pytest.mark.parametrize("name", sorted(FORMAT_DTYPES))
def test_every_dtype_round_trips_through_the_derived_dicts(name):
    _, bits, torch_name, numpy_name, ml_name = RECORDS[name]
    assert _convert.TORCH_DTYPES.get(name) == torch_name
    assert _convert.NUMPY_DTYPES.get(name) == numpy_name
    assert _convert.ML_DTYPES.get(name) == ml_name
    # Each framework name is read back as this dtype by the writer.
    for framework_name in {torch_name, numpy_name, ml_name} - {None}:
        assert _core._dtype_code(framework_name) == name
    assert _core._dtype_code(name) == name


@pytest.mark.parametrize("name", sorted(n for n in FORMAT_DTYPES if RECORDS[n][2]))
def test_torch_names_lead_to_torch_dtypes_of_the_same_width(name):
    attribute = RECORDS[name][2]
    if not hasattr(torch, attribute):
        # An older torch (1.13 has no float8 or uint16): refused by name, as before.
        with pytest.raises(SafetensorError, match=f"torch.{attribute} does not exist"):
            _convert.torch_dtype(torch, name)
        assert all(str(t) != f"torch.{attribute}" for t in st_torch._SIZE)
        return
    dtype = getattr(torch, attribute)
    assert _convert.torch_dtype(torch, name) is dtype
    element = torch.empty(0, dtype=dtype).element_size()
    assert st_torch._SIZE[dtype] == element
    # torch's float4 element packs two values into its byte.
    assert element * 8 == (8 if name == "F4" else FORMAT_DTYPES[name])


@pytest.mark.parametrize("name", sorted(n for n in FORMAT_DTYPES if RECORDS[n][3]))
def test_numpy_names_lead_to_numpy_dtypes_of_the_same_width(name):
    dtype = _convert.numpy_dtype(name)
    assert dtype == np.dtype(RECORDS[name][3])
    assert dtype.itemsize * 8 == FORMAT_DTYPES[name]


@pytest.mark.parametrize("name", sorted(n for n in FORMAT_DTYPES if RECORDS[n][4]))
def test_ml_dtypes_names_lead_to_types_of_the_same_width(name):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    dtype = _convert.numpy_dtype(name)
    assert dtype == np.dtype(getattr(ml_dtypes, RECORDS[name][4]))
    assert dtype.itemsize * 8 == FORMAT_DTYPES[name]


def test_dtypes_no_framework_has_are_refused_by_name():
    for name in ("F6_E2M3", "F6_E3M2"):
        assert RECORDS[name][2:] == (None, None, None)
        with pytest.raises(SafetensorError, match=f"dtype {name} cannot be loaded as a numpy"):
            _convert.numpy_dtype(name)
        with pytest.raises(SafetensorError, match=f"dtype {name} cannot be loaded as a torch"):
            _convert.torch_dtype(torch, name)


def test_cast_targets_are_the_three_float_types():
    assert st_torch._CAST_TARGETS == {torch.float16: "F16", torch.bfloat16: "BF16",
                                      torch.float32: "F32"}
    from libsafetensors import numpy as st_numpy
    assert st_numpy._CAST_TARGETS == {"float16": "F16", "float32": "F32", "bfloat16": "BF16"}


def test_types_table_maps_header_names_to_torch_dtypes():
    # What vLLM and torch's HuggingFaceStorageReader import from safetensors.torch.
    for name, dtype in st_torch._TYPES.items():
        assert st_torch._getdtype(name) is dtype
        assert torch.empty(0, dtype=dtype).element_size() * 8 == FORMAT_DTYPES[name], name
    assert "F4" not in st_torch._TYPES  # two values per torch element: a shape would lie
    with pytest.raises(KeyError):
        st_torch._getdtype("F4")
    assert st_torch._getdtype("BF16") is torch.bfloat16
    assert {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL",
            "C64"} <= set(st_torch._TYPES)


def test_types_table_holds_every_entry_of_the_references():
    import reference_oracle

    loaded = reference_oracle.load()
    if loaded is None or loaded[1] is None:
        pytest.skip("the reference safetensors 0.8 (with torch) is not installed")
    reference = loaded[1]._TYPES
    assert {k: v for k, v in reference.items() if v is not None} == {
        k: st_torch._TYPES[k] for k, v in reference.items() if v is not None}


def test_numpy_types_table_holds_every_entry_of_the_references():
    from libsafetensors import numpy as st_numpy

    for name, numpy_type in st_numpy._TYPES.items():
        assert st_numpy._getdtype(name) is numpy_type
        assert np.dtype(numpy_type).itemsize * 8 == FORMAT_DTYPES[name], name
    import reference_oracle

    loaded = reference_oracle.load()
    if loaded is None:
        pytest.skip("the reference safetensors 0.8 is not installed")
    reference = loaded[2]._TYPES
    assert {k: np.dtype(v) for k, v in reference.items()} == {
        k: np.dtype(st_numpy._TYPES[k]) for k in reference}
