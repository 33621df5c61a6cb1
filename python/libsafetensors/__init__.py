"""libsafetensors: a drop-in for the `safetensors` Python package, built on the C++ library.

`import libsafetensors as safetensors` (and `libsafetensors.torch`, `libsafetensors.numpy`)
offers the API of the reference release 0.8: `safe_open`, `serialize`, `serialize_file`,
`deserialize`, `SafetensorError`, and the framework helpers in the submodules. `Checkpoint`
and `load_checkpoint` (in `libsafetensors.torch` and `libsafetensors.numpy`) add sharded
checkpoints and the parallel loader.
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
from libsafetensors._open import _backend, safe_open

__all__ = [
    "Checkpoint",
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


class Checkpoint(_core.Checkpoint):
    """Many safetensors files seen as one name space of tensors.

    Args:
        path (`str` or `os.PathLike`): a directory (holding `model.safetensors.index.json`, or
            exactly one `*.safetensors`), an index file in transformers' format, or a single
            safetensors file.
        backend (`str`, defaults to `"mmap"`): as for `safe_open`.

    Opening checks every shard and that index and shards agree (every mapped tensor exists in
    its shard, none is in two, every shard tensor is mapped, `total_size` is right, shard names
    stay inside the directory); any disagreement raises SafetensorError naming it.
    """

    def __init__(self, path, backend="mmap"):
        backend = _backend(backend, True)
        super().__init__(os.fsdecode(path), backend)
        self._backend = backend
        self._shards = {}

    def get_tensor(self, name, framework="pt", device="cpu"):
        """The whole tensor `name`, zero-copy on the mmap backend, as `safe_open.get_tensor`."""
        shard = self.info(name)[0]
        # Each shard is reopened through safe_open's machinery when first asked for: its
        # copy-on-write mapping makes the tensors writable without touching the file.
        file = self._shards.get(shard)
        if file is None:
            file = self._shards[shard] = _core.File.open(shard, self._backend)
        return safe_open._from_file(file, framework, device).get_tensor(name)

    def __iter__(self):
        return iter(self.keys())

    def __repr__(self):
        where = self.index_path or self.files()[0]
        return f"Checkpoint({where!r}: {len(self)} tensors in {len(self.files())} files)"


def _plan_load(path, dtype, names, threads):
    """(checkpoint, plan) for `load_checkpoint`; plan is None when `names` selects nothing.

    `dtype` is a safetensors dtype name or None; `names` a list of names, a glob string or
    None for every tensor.
    """
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, not {threads!r}")
    if isinstance(names, str):
        selection = {"pattern": names}
    elif names is None:
        selection = {}
    else:
        selection = {"names": list(names)}
    checkpoint = path if isinstance(path, _core.Checkpoint) else Checkpoint(path)
    if names is not None and not (selection.get("pattern") or selection.get("names")):
        return checkpoint, None  # the library reads an empty selection as "everything"
    return checkpoint, checkpoint.plan(dtype, **selection)
