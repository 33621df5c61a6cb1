"""numpy helpers, as `safetensors.numpy`: save/load dicts of arrays to bytes or files."""

import os
import sys
from typing import Dict, Optional, Union

import numpy as np

from libsafetensors._core import deserialize, serialize, serialize_file  # noqa: F401
from libsafetensors._open import safe_open

__all__ = ["save", "save_file", "load", "load_file"]


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
        array = _little_endian_contiguous(np.asarray(array))
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


def load_file(filename, *, backend: str = "mmap", mmap: bool = True) -> Dict[str, np.ndarray]:
    """Every array of a file, in file order; zero-copy views of the mapping by default."""
    with safe_open(filename, framework="np", backend=backend, mmap=mmap) as f:
        return f.get_tensors()
