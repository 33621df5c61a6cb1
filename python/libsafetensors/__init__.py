"""libsafetensors: a drop-in for the `safetensors` Python package, built on the C++ library.

`import libsafetensors as safetensors` (and `libsafetensors.torch`, `libsafetensors.numpy`)
offers the API of the reference release 0.8: `safe_open`, `serialize`, `serialize_file`,
`deserialize`, `SafetensorError`, and the framework helpers in the submodules. `Checkpoint`
and `load_checkpoint` (in `libsafetensors.torch` and `libsafetensors.numpy`) add sharded
checkpoints and the parallel loader; `plan_device_map` plans a device_map under per-device
budgets from the headers. `install_as_safetensors()` makes code that imports
`safetensors` (transformers, diffusers) use this package instead.
"""

import operator
import os
from typing import Any, List, NamedTuple, Optional

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
from libsafetensors._device import cuda_status, gds_status, release_cuda_staging
from libsafetensors._device_map import DeviceMap, plan_device_map
from libsafetensors._open import _backend, safe_open
from libsafetensors._shim import install_as_safetensors, uninstall_as_safetensors

__all__ = [
    "Checkpoint",
    "DeviceMap",
    "SafetensorError",
    "TensorSpec",
    "__version__",
    "cuda_status",
    "deserialize",
    "gds_status",
    "install_as_safetensors",
    "plan_device_map",
    "release_cuda_staging",
    "safe_open",
    "serialize",
    "serialize_file",
    "uninstall_as_safetensors",
]


class _TensorSpecFields(NamedTuple):
    dtype: str
    shape: List[int]
    data: Any
    data_ptr: Optional[int]
    data_len: Optional[int]


class TensorSpec(_TensorSpecFields):
    """One tensor to serialize: accepted wherever `serialize` takes a {dtype, shape, data} dict.

    `TensorSpec(dtype, shape, data)` takes any contiguous bytes-like object of exactly the
    tensor's size; `TensorSpec(dtype=..., shape=..., data_ptr=..., data_len=...)` (the
    reference's form) takes a raw address and a byte count instead, and the caller keeps that
    memory alive while it is serialized.

    `dtype` is a framework name ("float32", "bfloat16", ...) or a safetensors one ("F32"); it
    is checked here and kept as the safetensors name. `shape` is the logical shape recorded in
    the header: given with torch's name "float4_e2m1fn_x2", whose elements hold two F4 values,
    the last dimension is doubled from the storage shape torch reports.
    """

    __slots__ = ()

    # The fields in order, so that copy and pickle (which pass them positionally) work.
    def __new__(cls, dtype, shape, data=None, data_ptr=None, data_len=None):
        if not isinstance(dtype, str):
            raise TypeError(f"TensorSpec dtype must be a str, not {type(dtype).__name__}")
        code = _core._dtype_code(dtype)
        dims = [operator.index(d) for d in shape]
        if any(d < 0 for d in dims):
            raise ValueError(f"TensorSpec shape {dims} has a negative dimension")
        if dtype == "float4_e2m1fn_x2" and dims:
            dims[-1] *= 2
        too_big = [d for d in dims if d >= 1 << 64]
        if too_big:
            raise SafetensorError(f"TensorSpec shape {dims}: dimension {too_big[0]} does not fit "
                                  "in 64 bits")
        if data is None:
            if data_ptr is None or data_len is None:
                raise TypeError("TensorSpec needs `data`, or both `data_ptr` and `data_len`")
            data_ptr, data_len = operator.index(data_ptr), operator.index(data_len)
            if data_ptr < 0 or data_len < 0:
                raise ValueError("TensorSpec data_ptr and data_len must not be negative")
        elif data_ptr is not None or data_len is not None:
            raise TypeError("TensorSpec takes either `data` or `data_ptr` and `data_len`, not both")
        return super().__new__(cls, code, dims, data, data_ptr, data_len)


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
    # Shown in errors as the OS has it: a str name may be os.fsdecode's of bytes.
    name = os.fsencode(name) if isinstance(name, (str, bytes, os.PathLike)) else str(name)
    file = _core.File.from_bytes(data, name)
    return safe_open._from_file(file, framework, device)


class Checkpoint(_core.Checkpoint):
    """Many safetensors files seen as one name space of tensors.

    Args:
        path (`str`, `bytes` or `os.PathLike`): a directory (holding
            `model.safetensors.index.json`, or exactly one `*.safetensors`), an index file in
            transformers' format, or a single safetensors file.
        backend (`str`, defaults to `"mmap"`): as for `safe_open`.

    Opening checks every shard and that index and shards agree (every mapped tensor exists in
    its shard, none is in two, every shard tensor is mapped, shard names stay inside the
    directory); any disagreement raises SafetensorError naming it. The index's `total_size` is
    `declared_total_size`, as written and unchecked (mlx-lm writes the shards' file sizes);
    `total_size` is the tensors' bytes.
    """

    def __init__(self, path, backend="mmap"):
        backend = _backend(backend, True)
        super().__init__(path, backend)
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


def _plan_load(path, dtype, names, threads, **parts):
    """(checkpoint, plan) for `load_checkpoint`; plan is None when `names` selects nothing.

    `dtype` is a safetensors dtype name or None; `names` a list of names, a glob string or
    None for every tensor; `parts` goes to Checkpoint.plan (slices, tp_plan, rank, ...).
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
    return checkpoint, checkpoint.plan(dtype, **selection, **parts)


def _as_stored(checkpoint, plan, target) -> bool:
    """True when every tensor of the plan, made for the dtype name `target` (None: none),
    keeps its stored dtype."""
    return target is None or all(checkpoint.info(name)[1] == stored
                                 for name, stored, *_ in plan.tensors)


def _load_mapped(checkpoint, plan, threads, framework):
    """`load_checkpoint` of the plan's tensors (none converted) as the files' pages, in name
    order: each shard mapped copy-on-write and every page of its selected tensors read in
    first, as `load_file(materialize=True)` does."""
    tensors = plan.tensors
    files = checkpoint.files()
    if len(tensors) == len(checkpoint):  # every shard whole (each tensor is in one shard)
        by_shard = {shard: None for shard in files}
    else:
        by_shard = {}
        for name, *_ in tensors:
            by_shard.setdefault(checkpoint.info(name)[0], []).append(name)
    loaded = {}
    for shard, names in by_shard.items():
        with safe_open(shard, framework=framework) as f:
            if names is None or len(names) == len(f.keys()):  # whole: one range, all at once
                f._populate(None, threads or 0)
                loaded.update(f.get_tensors())
                continue
            f._populate(names, threads or 0)
            for name in names:
                loaded[name] = f.get_tensor(name)
    return {name: loaded[name] for name, *_ in tensors}
