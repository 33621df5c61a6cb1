"""libsafetensors: a drop-in for the `safetensors` Python package, built on the C++ library.

`import libsafetensors as safetensors` (and `libsafetensors.torch`, `libsafetensors.numpy`)
offers the API of the reference release 0.8: `safe_open`, `serialize`, `serialize_file`,
`deserialize`, `SafetensorError`, and the framework helpers in the submodules.
"""

import os
from typing import Any, NamedTuple, Sequence

# Absolute imports throughout the package: when another name is aliased onto it (e.g.
# sys.modules["safetensors"] = libsafetensors), submodules loaded under that name still share
# the one native module and exception type.
from libsafetensors import _core
from libsafetensors._core import (
    SafetensorError,
    __version__,
    deserialize,
    serialize,
    serialize_file,
)
from libsafetensors._open import safe_open

__all__ = [
    "SafetensorError",
    "TensorSpec",
    "__version__",
    "deserialize",
    "safe_open",
    "serialize",
    "serialize_file",
]


class TensorSpec(NamedTuple):
    """One tensor to serialize: accepted wherever `serialize` takes a {dtype, shape, data} dict.

    `dtype` is a framework name ("float32", "bfloat16", ...) or a safetensors one ("F32");
    `data` is any contiguous bytes-like object of exactly the tensor's size.
    """

    dtype: str
    shape: Sequence[int]
    data: Any


# The reference's variant that releases the GIL; ours always does.
serialize_file_threadable = serialize_file


def _safe_open_handle(handle, framework, device="cpu"):
    """`safe_open` over an open file object (read whole into memory) instead of a path."""
    try:
        fd = handle.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is not None:
        size = os.fstat(fd).st_size
        data = bytearray()
        while len(data) < size:
            chunk = os.pread(fd, size - len(data), len(data))
            if not chunk:
                break
            data += chunk
    else:
        handle.seek(0)
        data = handle.read()
    name = getattr(handle, "name", "<handle>")
    file = _core.File.from_bytes(data, str(name))
    return safe_open._from_file(file, framework, device)
