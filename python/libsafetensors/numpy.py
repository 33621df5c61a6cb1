"""numpy helpers, as `safetensors.numpy`: save/load dicts of arrays to bytes or files."""

import os
import sys
from typing import Dict, List, Optional, Union

import numpy as np

from libsafetensors import (TensorSpec, _as_stored, _load_mapped,  # noqa: F401 - TensorSpec: the reference's
                            _plan_load)
from libsafetensors._collector import collector_paused_during
from libsafetensors._convert import ML_DTYPES, NUMPY_DTYPES, numpy_dtype, representable
from libsafetensors._core import (  # noqa: F401 - deserialize is part of this module's API
    SafetensorError, deserialize, serialize, serialize_file)
from libsafetensors._open import safe_open

__all__ = ["save", "save_file", "load", "load_file", "load_checkpoint"]

# safetensors dtype name -> numpy type, as the reference exports it for code that reads
# headers itself: the dtypes numpy has of its own (ml_dtypes' are not numpy's).
_TYPES = {name: np.dtype(numpy_name).type for name, numpy_name in NUMPY_DTYPES.items()}


def _getdtype(dtype_str: str):
    """The numpy type of a safetensors dtype name (KeyError for one numpy lacks)."""
    return _TYPES[dtype_str]


# The dtypes load_checkpoint converts floating-point arrays to, by numpy name.
_CAST_TARGETS = {NUMPY_DTYPES.get(name) or ML_DTYPES[name]: name for name in ("F16", "F32", "BF16")}


def _little_endian_contiguous(array):
    """C-ordered, little-endian bytes of any array (Fortran-ordered or strided included)."""
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)  # never for 0-d arrays, which it would make 1-d
    order = array.dtype.byteorder
    if order == ">" or (order == "=" and sys.byteorder == "big"):
        array = array.astype(array.dtype.newbyteorder("<"))
    return array


def _flatten(tensor_dict):
    if not isinstance(tensor_dict, dict):
        raise ValueError(f"Expected a dict of [str, np.ndarray] but received {type(tensor_dict)}")
    flattened = {}
    for name, array in tensor_dict.items():
        array = np.asarray(array)
        if array.dtype.hasobject:
            # Its bytes are pointers to Python objects, not values a file can hold.
            raise ValueError(f"Array `{name}` has dtype {array.dtype}, which holds Python "
                             "objects: only arrays of numbers can be saved")
        array = _little_endian_contiguous(array)
        # A byte view: the buffer protocol cannot describe every dtype (ml_dtypes' bfloat16).
        data = array.reshape(-1).view(np.uint8) if array.size else b""
        flattened[name] = {"dtype": array.dtype.name, "shape": array.shape, "data": data}
    return flattened


def save(tensor_dict: Dict[str, np.ndarray], metadata: Optional[Dict[str, str]] = None) -> bytes:
    """The bytes of a safetensors file holding `tensor_dict` (and `metadata`, if given)."""
    return serialize(_flatten(tensor_dict), metadata=metadata)


def save_file(
    tensor_dict: Dict[str, np.ndarray],
    filename: Union[str, os.PathLike],
    metadata: Optional[Dict[str, str]] = None,
) -> None:
    """Writes `tensor_dict` to `filename` atomically."""
    serialize_file(_flatten(tensor_dict), filename, metadata=metadata)


def load(data: bytes) -> Dict[str, np.ndarray]:
    """The arrays of a safetensors file held in memory, in file order."""
    from libsafetensors import _core

    handle = safe_open._from_file(_core.File.from_bytes(data), "np", "cpu")
    return handle.get_tensors()


def load_file(filename, *, backend: str = "mmap", mmap: bool = True,
              materialize: bool = False) -> Dict[str, np.ndarray]:
    """Every array of a file, in file order; zero-copy views of the mapping by default.

    With `materialize=True` every page is read before this returns, at the speed of a
    sequential read, instead of on first touch (see `libsafetensors.torch.load_file`).
    """
    with safe_open(filename, framework="np", backend=backend, mmap=mmap) as f:
        if materialize:
            f._populate()
        return f.get_tensors()


def _cast_target(dtype):
    """The safetensors name of a `load_checkpoint` dtype (np.float16, "bfloat16", ...)."""
    try:
        name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in _CAST_TARGETS:
        raise ValueError(f"dtype {dtype} cannot be loaded into: expected float16, float32, "
                         "bfloat16 (from ml_dtypes) or None")
    if name == "bfloat16":
        try:
            import ml_dtypes  # noqa: F401
        except ImportError:
            raise SafetensorError("dtype bfloat16 needs the ml_dtypes package, which is not "
                                  "installed: numpy has no bfloat16 type of its own") from None
    return _CAST_TARGETS[name]


@collector_paused_during
def load_checkpoint(
    path,
    dtype=None,
    threads: Optional[int] = None,
    names: Union[None, str, List[str]] = None,
    *,
    copy: bool = False,
) -> Dict[str, np.ndarray]:
    """Reads a whole checkpoint (or part of it) into memory, in parallel, in name order.

    `path` is a directory of shards with its index, an index file, a single safetensors file
    or an open `libsafetensors.Checkpoint`; `dtype` np.float16, np.float32 or bfloat16 (needs
    ml_dtypes) converts floating-point arrays while copying; `threads` None uses every core;
    `names` is a list of names or a glob pattern such as "h.0.*". Arrays loaded as stored are
    the files' pages, as the torch `load_checkpoint` gives them (each shard mapped
    copy-on-write, every page read in before this returns); converted arrays and `copy=True`
    loads are views of one uint8 array of exactly their bytes (plus 64-byte alignment).
    """
    target = None if dtype is None else _cast_target(dtype)
    checkpoint, plan = _plan_load(path, target, names, threads)
    if plan is None:
        return {}
    if not copy and _as_stored(checkpoint, plan, target):
        return _load_mapped(checkpoint, plan, threads, "np")
    # The arrays are made first, so that one numpy cannot represent fails before any reading.
    buffer = np.empty(plan.buffer_size, dtype=np.uint8)
    arrays = {}
    for name, stored, shape, offset, nbytes in plan.tensors:
        np_dtype = numpy_dtype(stored)
        with representable("np", name, shape):
            arrays[name] = buffer[offset:offset + nbytes].view(np_dtype).reshape(shape)
    checkpoint.load_into(plan, buffer, threads or 0)
    return arrays
