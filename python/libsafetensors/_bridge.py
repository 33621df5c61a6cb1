"""The save/load helpers of frameworks whose arrays go through numpy (`safetensors.flax`,
`safetensors.tensorflow`, `safetensors.mlx`, `safetensors.paddle` in the reference): one
implementation, parameterized by how a value of the framework becomes a numpy array.

Loading makes the framework's arrays through `safe_open(framework=...)`, which reads into
numpy first and converts (libsafetensors._convert). Saving converts each value to numpy and
writes as `libsafetensors.numpy` does, never changing the caller's dict (the reference's flax
and tensorflow helpers replace its values with numpy arrays).
"""

import os
from typing import Any, Callable, Dict, Optional, Union

from libsafetensors import _core, numpy as _numpy
from libsafetensors._open import safe_open


def refuse(name: str, value: Any, kind: str) -> None:
    """The error for a value to save that is not one of the framework's arrays."""
    raise ValueError(f"Key `{name}` is invalid, expected {kind} but received {type(value)}")


def helpers(framework: str, kind: str, to_numpy: Callable[[str, Any], Any],
            devices: bool = False):
    """(save, save_file, load, load_file) for `framework`, a framework name of safe_open.

    `to_numpy(name, value)` returns the numpy array, or a {dtype, shape, data} dict as
    `serialize` takes, of one value to save, and calls `refuse` for a value that is not the
    framework's; `kind` names the framework's array type in errors. With `devices`, load and
    load_file take the reference's `device` argument (paddle); without, tensors are made where
    the framework puts new arrays.
    """

    def flatten(tensors):
        if not isinstance(tensors, dict):
            raise ValueError(f"Expected a dict of [str, {kind}] but received {type(tensors)}")
        arrays, specs = {}, {}
        for name, value in tensors.items():
            converted = to_numpy(name, value)
            (specs if isinstance(converted, dict) else arrays)[name] = converted
        flat = _numpy._flatten(arrays)
        flat.update(specs)
        return flat

    def save(tensors: Dict[str, Any], metadata: Optional[Dict[str, str]] = None) -> bytes:
        """The bytes of a safetensors file holding `tensors` (and the text `metadata`)."""
        return _core.serialize(flatten(tensors), metadata=metadata)

    def save_file(tensors: Dict[str, Any], filename: Union[str, os.PathLike],
                  metadata: Optional[Dict[str, str]] = None) -> None:
        """Writes `tensors` to `filename` atomically: a failed save leaves no file behind."""
        _core.serialize_file(flatten(tensors), filename, metadata=metadata)

    def load_on(data: bytes, device: str = "cpu") -> Dict[str, Any]:
        """The tensors of a safetensors file held in memory, in file order."""
        handle = safe_open._from_file(_core.File.from_bytes(data), framework, device)
        return handle.get_tensors()

    def load_file_on(filename: Union[str, os.PathLike], device: str = "cpu", *,
                     backend: str = "mmap") -> Dict[str, Any]:
        """Every tensor of a file, in file order (`backend` "mmap" or "pread", as
        safe_open)."""
        with safe_open(filename, framework=framework, device=device, backend=backend) as f:
            return f.get_tensors()

    if devices:
        return save, save_file, load_on, load_file_on

    def load(data: bytes) -> Dict[str, Any]:
        return load_on(data)

    def load_file(filename: Union[str, os.PathLike], *, backend: str = "mmap") -> Dict[str, Any]:
        return load_file_on(filename, backend=backend)

    load.__doc__, load_file.__doc__ = load_on.__doc__, load_file_on.__doc__
    return save, save_file, load, load_file
