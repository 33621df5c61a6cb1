"""torch helpers, as `safetensors.torch`: tensors and models to and from safetensors files.

Tensors that share memory (tied weights) cannot be stored twice: `save_file` refuses them and
`save_model`/`load_model` keep one name per shared storage, recording the others in the
metadata as `{dropped name: kept name}`.
"""

import os
from collections import defaultdict
from typing import Any, Dict, List, Optional, Set, Tuple, Union

import torch

from libsafetensors import (TensorSpec, _as_stored, _core, _device,  # noqa: F401 - TensorSpec
                            _load_mapped, _plan_load)
from libsafetensors._collector import collector_paused_during
from libsafetensors._convert import (DTYPE_BITS, TORCH_DTYPES, Converter, representable,
                                     torch_dtype)
from libsafetensors._core import deserialize, serialize, serialize_file  # noqa: F401 - API
from libsafetensors._open import safe_open

__all__ = [
    "save", "save_file", "load", "load_file", "save_model", "load_model", "load_checkpoint",
]  # fmt: skip

# Bytes per element of every torch dtype the format stores, as the reference exports it (this
# module uses element_size(), which knows every dtype); dtypes this torch lacks are skipped.
# torch's float4_e2m1fn_x2 element is one byte holding two 4-bit values.
_SIZE = {
    getattr(torch, attribute): max(DTYPE_BITS[name] // 8, 1)
    for name, attribute in TORCH_DTYPES.items()
    if hasattr(torch, attribute)
}
_FLOAT4 = getattr(torch, TORCH_DTYPES["F4"], None)
# safetensors dtype name -> torch dtype, as the reference exports it: code that reads headers
# itself imports it (vLLM's `from safetensors.torch import _TYPES`, torch's
# HuggingFaceStorageReader through `_getdtype`). Every dtype this torch has but F4, whose
# torch element holds two values, so that a shape read from a header would give the wrong size.
_TYPES = {
    name: getattr(torch, attribute)
    for name, attribute in TORCH_DTYPES.items()
    if name != "F4" and hasattr(torch, attribute)
}


def _getdtype(dtype_str: str) -> torch.dtype:
    """The torch dtype of a safetensors dtype name (KeyError for one torch lacks, or F4)."""
    return _TYPES[dtype_str]

# The dtypes load_checkpoint converts floating-point tensors to, by safetensors name.
_CAST_TARGETS = {torch_dtype(torch, name): name for name in ("F16", "BF16", "F32")}


def storage_ptr(tensor: torch.Tensor) -> int:
    """Address of the start of the storage behind `tensor` (0 when it has none, e.g. meta)."""
    try:
        return tensor.untyped_storage().data_ptr()
    except Exception:
        try:
            return tensor.storage().data_ptr()
        except NotImplementedError:
            return 0


def storage_size(tensor: torch.Tensor) -> int:
    """Bytes of the storage behind `tensor`; the tensor's own size for meta tensors."""
    try:
        return tensor.untyped_storage().nbytes()
    except AttributeError:
        try:
            return tensor.storage().size() * tensor.element_size()
        except NotImplementedError:
            return tensor.nelement() * tensor.element_size()


def _end_ptr(tensor: torch.Tensor) -> int:
    """One past the address of the last element of `tensor` (its start when empty)."""
    if tensor.nelement():
        return tensor.view(-1)[-1].data_ptr() + tensor.element_size()
    return tensor.data_ptr()


def _filter_shared_not_shared(tensors: List[Set[str]], state_dict: Dict[str, torch.Tensor]):
    """Splits groups on one storage into groups whose byte ranges actually overlap."""
    result = []
    for names in tensors:
        if len(names) < 2:
            result.append(names)
            continue
        areas = sorted((state_dict[n].data_ptr(), _end_ptr(state_dict[n]), n) for n in names)
        group_end = None
        for start, stop, name in areas:
            if group_end is None or start >= group_end:
                result.append({name})
                group_end = stop
            else:
                result[-1].add(name)
                group_end = max(group_end, stop)
    return result


def _find_shared_tensors(state_dict: Dict[str, torch.Tensor]) -> List[Set[str]]:
    """Groups of names whose tensors overlap in memory; singletons for unshared tensors.

    Meta tensors and tensors without storage share nothing.
    """
    groups = defaultdict(set)
    for name, tensor in state_dict.items():
        if tensor.device != torch.device("meta") and storage_ptr(tensor) and storage_size(tensor):
            # The device is part of the key: equal addresses on two GPUs are different memory.
            groups[(tensor.device, storage_ptr(tensor), storage_size(tensor))].add(name)
    return _filter_shared_not_shared(sorted(groups.values()), state_dict)


def _is_complete(tensor: torch.Tensor) -> bool:
    """True when `tensor` covers its whole storage, so saving it saves nothing extra."""
    return tensor.data_ptr() == storage_ptr(tensor) and (
        tensor.nelement() * tensor.element_size() == storage_size(tensor))


def _remove_duplicate_names(
    state_dict: Dict[str, torch.Tensor],
    *,
    preferred_names: Optional[List[str]] = None,
    discard_names: Optional[List[str]] = None,
) -> Dict[str, List[str]]:
    """For each group of tensors sharing memory, the name kept mapped to the names to drop.

    The kept name is the first in sorted order among the tensors that cover the whole storage,
    preferring names not in `discard_names`, then names in `preferred_names` (e.g. the names
    found in a file being loaded).
    """
    preferred_names = set(preferred_names or [])
    discard_names = set(discard_names or [])
    to_remove = defaultdict(list)
    for shared in _find_shared_tensors(state_dict):
        if len(shared) < 2:
            # Alone in its memory (possibly a part of a larger buffer, as the flattened weights
            # of torch's RNNs): nothing to remove, and saving it stores only its own bytes.
            continue
        complete = {name for name in shared if _is_complete(state_dict[name])}
        if not complete:
            raise RuntimeError(
                f"Cannot choose which of the shared tensors {sorted(shared)} to keep: none of "
                "them covers its entire storage. Refusing to save/load the model since you "
                "could be storing much more memory than needed. Save copies (`.clone()`) of "
                "the parts you need instead; see "
                "https://huggingface.co/docs/safetensors/torch_shared_tensors"
            )
        keep = min(complete)
        if complete - discard_names:
            keep = min(complete - discard_names)
        if preferred_names & complete:
            keep = min(preferred_names & complete)
        for name in sorted(shared):
            if name != keep:
                to_remove[keep].append(name)
    return to_remove


def _tobytes(tensor: torch.Tensor, name: str):
    """A zero-copy uint8 view of a dense tensor's bytes (moved to the CPU first if needed)."""
    if tensor.layout != torch.strided:
        raise ValueError(
            f"You are trying to save a sparse tensor: `{name}` which this library does not "
            "support. You can make it a dense tensor before saving with `.to_dense()` but be "
            "aware this might make a much larger file than needed."
        )
    if not tensor.is_contiguous():
        raise ValueError(
            f"You are trying to save a non contiguous tensor: `{name}` which is not allowed. "
            "Save the tensor it is a view of and re-slice it after loading, or call "
            "`.contiguous()` on it to pack it before saving."
        )
    if tensor.device.type != "cpu":
        tensor = tensor.to("cpu")
    if tensor.nelement() == 0:
        return b""
    # Conjugate and negative views keep their sign in a bit: what is saved is their value.
    tensor = tensor.detach().resolve_conj().resolve_neg()
    return tensor.reshape(-1).view(torch.uint8).numpy()


def _flatten(tensors: Dict[str, torch.Tensor]) -> Dict[str, Dict[str, Any]]:
    if not isinstance(tensors, dict):
        raise ValueError(f"Expected a dict of [str, torch.Tensor] but received {type(tensors)}")
    sparse = []
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(
                f"Key `{name}` is invalid, expected torch.Tensor but received {type(tensor)}")
        if tensor.layout != torch.strided:
            sparse.append(name)
        elif tensor.is_nested or tensor.is_quantized:
            # Their memory is not the values: nested tensors pack ragged rows, quantized ones
            # keep their scale elsewhere.
            kind = "nested" if tensor.is_nested else "quantized"
            raise ValueError(f"You are trying to save a {kind} tensor: `{name}` which this "
                             "library does not support; save its dense values instead.")
    if sparse:
        raise ValueError(
            f"You are trying to save a sparse tensors: `{sparse}` which this library does not "
            "support. You can make it a dense tensor before saving with `.to_dense()` but be "
            "aware this might make a much larger file than needed."
        )
    shared = [names for names in _find_shared_tensors(tensors) if len(names) > 1]
    if shared:
        raise RuntimeError(
            f"Some tensors share memory, this will lead to duplicate memory on disk and "
            f"potential differences when loading them again: {shared}.\n"
            "A potential way to correctly save your model is to use `save_model`.\n"
            "More information at https://huggingface.co/docs/safetensors/torch_shared_tensors"
        )
    flattened = {}
    for name, tensor in tensors.items():
        shape = list(tensor.shape)
        if _FLOAT4 is not None and tensor.dtype == _FLOAT4 and shape:
            shape[-1] *= 2  # two F4 values per float4_e2m1fn_x2 element
        flattened[name] = {
            "dtype": str(tensor.dtype).split(".")[-1],
            "shape": shape,
            "data": _tobytes(tensor, name),
        }
    return flattened


def save(tensors: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None) -> bytes:
    """The bytes of a safetensors file holding `tensors` (dense, contiguous, not shared)."""
    return serialize(_flatten(tensors), metadata=metadata)


def save_file(
    tensors: Dict[str, torch.Tensor],
    filename: Union[str, os.PathLike],
    metadata: Optional[Dict[str, str]] = None,
) -> None:
    """Writes `tensors` to `filename` atomically; the GIL is released while writing."""
    serialize_file(_flatten(tensors), filename, metadata=metadata)


def load_file(
    filename: Union[str, os.PathLike],
    device: Union[str, int, torch.device, Dict[str, Any]] = "cpu",
    dtype: Optional[torch.dtype] = None,
    *,
    backend: str = "mmap",
    mmap: bool = True,
    materialize: bool = False,
) -> Dict[str, torch.Tensor]:
    """Every tensor of a file, in file order; on the CPU, zero-copy views of a private
    copy-on-write mapping (writing to them never changes the file).

    Pages are read when first touched. With `materialize=True` every page is read before this
    returns, in parallel, for callers that will use every tensor: cold, at about the rate of
    `cat` of the same file (bench/cold_load.py; the README has a run).

    With `dtype`, floating-point tensors are converted to it while the file is read into new
    memory, as `load_checkpoint` does (tensors then come in name order).
    """
    if dtype is not None:
        return load_checkpoint(filename, dtype=dtype, device=device)
    if (not isinstance(filename, _core.Checkpoint) and os.path.isfile(filename)
            and _device.cuda_target(torch, device) is not None
            and _device.cuda_unavailable_reason() is None):
        loaded = load_checkpoint(filename, device=device)
        with safe_open(filename, framework="pt", backend=backend, mmap=mmap) as f:
            return {name: loaded[name] for name in f.offset_keys()}  # file order
    with safe_open(filename, framework="pt", device=device, backend=backend, mmap=mmap) as f:
        if materialize:
            f._populate()
        return f.get_tensors()


@collector_paused_during
def load_checkpoint(
    path: Union[str, os.PathLike, _core.Checkpoint],
    dtype: Optional[torch.dtype] = None,
    device: Union[str, int, torch.device, Dict[str, Any]] = "cpu",
    threads: Optional[int] = None,
    names: Union[None, str, List[str]] = None,
    *,
    tp_plan: Any = None,
    rank: Optional[int] = None,
    world_size: Optional[int] = None,
    strict: bool = False,
    replicated: str = "read",
    group: Any = None,
    copy: bool = False,
    device_map: Union[None, str, Dict[str, Any]] = None,
    max_memory: Optional[Dict[Any, Union[int, str]]] = None,
    no_split: Optional[List[str]] = None,
) -> Dict[str, torch.Tensor]:
    """Reads a whole checkpoint (or part of it) into memory, in parallel, in name order.

    Args:
        path: a directory of shards with its index, an index file, a single safetensors file,
            or an open `libsafetensors.Checkpoint`.
        dtype: torch.float16, torch.bfloat16 or torch.float32: F32, F16, BF16 and 8-bit float
            (F8_*) tensors are converted to it while copying, exactly as `.to(dtype)` would;
            others (F64, F4 and F6 included) are unchanged.
        device: where the tensors end up; a dict maps names or module prefixes to devices,
            as for `load_file`. One CUDA device ("cuda:0", 0, torch.device) is loaded into
            directly when the library finds the CUDA runtime (`libsafetensors.cuda_status()`):
            reads into a bounded ring of pinned buffers (256 MB at most), asynchronous copies,
            one device allocation of exactly the tensors' bytes. Otherwise, and for other
            devices, tensors are loaded on the CPU first and moved with `.to(device)`.
        threads: worker threads; None for the library's default (every core).
        names: the tensors to load, as a list of names or a glob pattern (`*`, `?`) such as
            "h.0.*"; None for all. An absent name raises SafetensorError.
        tp_plan: tensor parallelism: transformers' tp_plan ({"model.layers.*.mlp.up_proj":
            "colwise", ...}, explicit splits as {"dim": d, "sizes": [...]}); each tensor a rule
            splits comes back as this rank's part, and only that part's bytes are read. The
            others are replicated. docs/PARALLEL.md has the styles and the uneven splits.
        rank, world_size: this rank and the group's size; by default torch.distributed's
            (`group`'s). strict: a tp_plan rule that matches no tensor raises.
        replicated: "read" (each rank reads the replicated tensors itself) or "exchange" (each
            reads 1/world_size of them and the ranks all-gather them through torch.distributed,
            which must be initialized); "auto" is "read" (bench/tp_load.py measured it faster
            on one node with the file in the page cache).

        copy: always copy into new memory, even tensors loaded as stored.

        device_map: big models on one machine, as transformers' `device_map`: {module or
            tensor name: device} (`libsafetensors.plan_device_map`'s result, or any such dict:
            a tensor goes where its own name or its closest enclosing module says, "" being
            the default), or "auto" to plan one here from `max_memory` (and `no_split`, and
            `dtype`). Devices are GPU indexes, "cuda:N" and other torch devices, "cpu" and
            "disk". "disk" tensors come back as lazy zero-copy views of the shard's
            copy-on-write mapping, as stored (`dtype` does not apply to them): nothing of them
            is read until used. "cpu" tensors are loaded as without a map (`copy` applies).
            Each GPU's tensors are loaded as `device="cuda:N"` loads them (a bounded pinned
            ring) where the library's device path can be used, else one shard at a time on
            the host and moved with `.to()`. Host memory thus holds the "cpu" tensors and at
            most one shard's worth more. A tensor no entry covers, a CUDA device torch cannot
            use, or `device` or `tp_plan` given as well raise before anything is read.
        max_memory, no_split: with device_map="auto", as for `plan_device_map`.

    Every page is in memory when this returns (but those of a device_map's "disk" tensors).
    Tensors loaded whole and as stored (no dtype conversion) are the files' own pages, as
    `load_file(materialize=True)` gives them: each shard mapped copy-on-write (writing to a
    tensor never changes the file) and every page of the selected tensors read in, in
    parallel, before this returns. That costs no new memory and reads at the rate of `cat`
    cold (bench/cold_load.py), where copying into fresh memory reached half of it. Converted
    tensors, parts of tensors and `copy=True` loads are views of one uint8 tensor of exactly
    their bytes, which nothing ties to the files: use `copy=True` for files that may be
    truncated or rewritten while the tensors are in use.
    """
    if dtype is not None and dtype not in _CAST_TARGETS:
        raise ValueError(f"dtype {dtype} cannot be loaded into: expected one of "
                         f"{', '.join(map(str, _CAST_TARGETS))} or None")
    if device_map is not None:
        if tp_plan is not None or rank is not None or world_size is not None:
            raise ValueError("load_checkpoint takes device_map or tp_plan, not both")
        if not _device_map_compatible(device):
            raise ValueError(f"load_checkpoint takes device_map or device={device!r}, not "
                             "both: the map says where each tensor goes")
        return _load_device_map(path, _CAST_TARGETS.get(dtype), names, threads, device_map,
                                max_memory, no_split, dtype, copy)
    if max_memory is not None or no_split is not None:
        raise ValueError("max_memory and no_split go with device_map='auto'")
    convert = Converter("pt", device)
    parallel = tp_plan is not None or rank is not None or world_size is not None
    if parallel:
        return _load_parallel(path, _CAST_TARGETS.get(dtype), convert, threads, names, tp_plan,
                              rank, world_size, strict, replicated, group)
    checkpoint, plan = _plan_load(path, _CAST_TARGETS.get(dtype), names, threads)
    if plan is None:
        return {}
    target = _device.cuda_target(torch, device)
    if target is not None and _device.cuda_unavailable_reason() is None:
        # Straight into device memory torch allocates (freed by torch with the tensors):
        # pinned staging buffers and asynchronous copies, never the whole model on the host.
        buffer = torch.empty(plan.buffer_size, dtype=torch.uint8, device=target)
        tensors = _plan_views(plan, buffer)
        # The allocator hands out memory ready for torch's current stream; ours are others.
        torch.cuda.current_stream(target).synchronize()
        checkpoint.load_to_cuda(plan, buffer, target.index,
                                threads or 0)
        return tensors
    if not copy and _as_stored(checkpoint, plan, _CAST_TARGETS.get(dtype)):
        tensors = _load_mapped(checkpoint, plan, threads, "pt")
    else:
        # The tensors are made first, so that one torch cannot represent fails before any
        # reading.
        buffer = _host_bytes(plan.buffer_size)
        tensors = _plan_views(plan, buffer)
        checkpoint.load_into(plan, buffer.numpy(), threads or 0)
    return _place(tensors, convert)


def _host_bytes(size: int) -> torch.Tensor:
    """Uninitialized host memory for a load. The device is named: under `with torch.device(...)`
    or torch.set_default_device (accelerate's empty-weights context, a CUDA default) a bare
    factory call would allocate there, and loads return CPU tensors as the reference does."""
    return torch.empty(size, dtype=torch.uint8, device="cpu")


def _plan_views(plan, buffer: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The plan's tensors as views of `buffer` (uint8, plan.buffer_size bytes), in name order;
    made before reading, so that a tensor torch cannot represent fails first.

    On the host each tensor gets a storage of its own over its bytes of the buffer (which the
    storages keep alive), as the reference's tensors have: torch.save refuses tensors of
    different dtypes that view one storage."""
    host = buffer.numpy() if buffer.device.type == "cpu" else None
    tensors = {}
    for name, stored, shape, offset, nbytes in plan.tensors:
        t_dtype = torch_dtype(torch, stored)
        if _FLOAT4 is not None and t_dtype == _FLOAT4 and shape:
            shape[-1] //= 2  # two F4 values per float4_e2m1fn_x2 element
        with representable("pt", name, shape):
            if host is None:
                tensors[name] = buffer[offset:offset + nbytes].view(t_dtype).reshape(shape)
            elif nbytes:
                tensors[name] = torch.frombuffer(host, dtype=t_dtype, offset=offset,
                                                 count=nbytes // _SIZE[t_dtype]).reshape(shape)
            else:
                tensors[name] = torch.empty(shape, dtype=t_dtype, device="cpu")
    return tensors


def _place(tensors, convert) -> Dict[str, torch.Tensor]:
    """Moves each tensor loaded on the CPU to the device `convert` maps its name to."""
    if convert.device is None:  # the CPU for all
        return tensors
    for name, tensor in tensors.items():
        device_for = convert._device_for(name)
        if device_for is not None:
            tensors[name] = tensor.to(device_for)
    return tensors


def _device_map_compatible(device) -> bool:
    return device is None or (isinstance(device, str) and device == "cpu")


def _map_device(value, names):
    """The torch.device (or "disk") of a device_map entry; ValueError naming the tensors."""
    if isinstance(value, str) and value == "disk":
        return "disk"
    if isinstance(value, bool):
        value = str(value)
    elif isinstance(value, str) and value.isdigit():
        value = int(value)  # a GPU index, as max_memory may name it
    try:
        return torch.device("cuda", value) if isinstance(value, int) else torch.device(value)
    except (RuntimeError, TypeError, ValueError) as error:
        raise ValueError(f"device_map puts {_some(names)} on {value!r}, which is not a "
                         f"device: {error}") from None


def _some(names, count=3) -> str:
    shown = ", ".join(names[:count])
    return shown + (f" and {len(names) - count} more" if len(names) > count else "")


def _check_cuda(device, names):
    """Raises before anything is read when torch cannot use CUDA device `device`."""
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"device_map puts {len(names)} tensor{'s' if len(names) != 1 else ''} "
            f"({_some(names)}) on {device}, but torch has no usable CUDA device "
            "(torch.cuda.is_available() is False); plan with cpu and disk budgets only")
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise RuntimeError(f"device_map puts {_some(names)} on {device}, but torch sees "
                           f"{torch.cuda.device_count()} CUDA device(s)")


def _load_device_map(path, dtype_name, names, threads, device_map, max_memory, no_split,
                     dtype, copy) -> Dict[str, torch.Tensor]:
    """load_checkpoint(device_map=...): each tensor where the map puts it, host memory bounded
    by the cpu tensors plus one shard's worth."""
    from libsafetensors._convert import device_for
    from libsafetensors._device_map import plan_device_map

    checkpoint, selection = _plan_load(path, None, names, threads)
    if selection is None:
        return {}
    if isinstance(device_map, str):
        if device_map != "auto":
            raise ValueError(f"device_map {device_map!r} is not a map: expected 'auto' or a "
                             "dict {module: device}")
        if max_memory is None:
            raise ValueError("device_map='auto' needs max_memory={device: budget}")
        device_map = plan_device_map(checkpoint, max_memory, no_split, dtype)
    elif max_memory is not None or no_split is not None:
        raise ValueError("max_memory and no_split go with device_map='auto'; this map is "
                         "already planned")
    elif not isinstance(device_map, dict):
        raise ValueError(f"device_map must be 'auto' or a dict {{module: device}}, not "
                         f"{type(device_map).__name__}")
    order = [name for name, *_ in selection.tensors]
    # Every tensor's device, and every device checked, before a byte is read.
    entries, uncovered = {}, []
    for name in order:
        value = device_for(device_map, name)
        if value is None:
            uncovered.append(name)
        else:
            entries.setdefault(value if isinstance(value, (str, int)) else str(value),
                               []).append(name)
    if uncovered:
        raise ValueError(f"device_map covers no module of {len(uncovered)} tensor"
                         f"{'s' if len(uncovered) != 1 else ''}: {_some(uncovered)}")
    groups = {}  # device -> names, in name order
    for value, group in entries.items():
        groups.setdefault(_map_device(value, group), []).extend(group)
    cuda_path = _device.cuda_unavailable_reason() is None
    for device, group in groups.items():
        if device != "disk" and device.type == "cuda":
            _check_cuda(device, group)
    shard_of = {name: checkpoint.info(name)[0] for name in order}

    tensors = {}
    handles = {}  # shard -> its safe_open, shared by its cpu and disk tensors

    def handle(shard):
        if shard not in handles:
            handles[shard] = safe_open(shard, framework="pt")
        return handles[shard]

    cpu = groups.pop(torch.device("cpu"), [])
    disk = groups.pop("disk", [])
    if cpu:
        plan = checkpoint.plan(dtype_name, names=cpu)
        if not copy and _as_stored(checkpoint, plan, dtype_name):
            # The shards' own pages, each shard's read in before the next one's.
            for shard, group in _by_shard(cpu, shard_of).items():
                f = handle(shard)
                f._populate(group, threads or 0)
                for name in group:
                    tensors[name] = f.get_tensor(name)
        else:  # converted: exactly their bytes, in one buffer
            buffer = _host_bytes(plan.buffer_size)
            tensors.update(_plan_views(plan, buffer))
            checkpoint.load_into(plan, buffer.numpy(), threads or 0)
    for device, group in groups.items():
        if device.type == "cuda" and cuda_path:
            # A bounded ring of pinned buffers: never the device's tensors all on the host.
            plan = checkpoint.plan(dtype_name, names=group)
            target = device if device.index is not None else torch.device(
                "cuda", torch.cuda.current_device())
            buffer = torch.empty(plan.buffer_size, dtype=torch.uint8, device=target)
            tensors.update(_plan_views(plan, buffer))
            torch.cuda.current_stream(target).synchronize()
            checkpoint.load_to_cuda(plan, buffer, target.index,
                                    threads or 0)
            continue
        for shard_names in _by_shard(group, shard_of).values():  # one shard on the host at once
            plan = checkpoint.plan(dtype_name, names=shard_names)
            buffer = _host_bytes(plan.buffer_size)
            staged = _plan_views(plan, buffer)
            checkpoint.load_into(plan, buffer.numpy(), threads or 0)
            for name, tensor in staged.items():
                tensors[name] = tensor.to(device)
            del staged, buffer
    for shard, group in _by_shard(disk, shard_of).items():
        f = handle(shard)  # views of the mapping: nothing is read
        for name in group:
            tensors[name] = f.get_tensor(name)
    return {name: tensors[name] for name in order}


def _by_shard(names, shard_of) -> Dict[str, List[str]]:
    by_shard = {}
    for name in names:
        by_shard.setdefault(shard_of[name], []).append(name)
    return by_shard


def _load_parallel(path, dtype_name, convert, threads, names, tp_plan, rank, world_size, strict,
                   replicated, group) -> Dict[str, torch.Tensor]:
    """load_checkpoint for one rank of a tensor-parallel group (docs/PARALLEL.md)."""
    from libsafetensors._parallel import REPLICATED, resolve_rank, tp_rules

    if replicated not in REPLICATED:
        raise ValueError(f"replicated must be one of {', '.join(REPLICATED)}, not {replicated!r}")
    rank, world_size = resolve_rank(rank, world_size, group)
    rules = tp_rules(tp_plan or {})
    parts = dict(tp_plan=rules, rank=rank, world_size=world_size, strict=strict)
    # Every check (the plan against the shapes, the selection) before a byte is read.
    checkpoint, plan = _plan_load(path, dtype_name, names, threads, **parts)
    if plan is None:
        return {}
    if replicated == "exchange" and world_size > 1:
        split = checkpoint.plan_tensor_parallel(rules, rank, world_size, strict)
        own = [t[0] for t in plan.tensors if t[0] in split]
        shared = [t[0] for t in plan.tensors if t[0] not in split]
        tensors = {}
        if own:
            own_plan = checkpoint.plan(dtype_name, names=own, **parts)
            buffer = _host_bytes(own_plan.buffer_size)
            tensors.update(_plan_views(own_plan, buffer))
            checkpoint.load_into(own_plan, buffer.numpy(), threads or 0)
        if shared:
            tensors.update(_exchange(checkpoint, checkpoint.plan(dtype_name, names=shared),
                                     threads, rank, world_size, group))
        tensors = {name: tensors[name] for name, *_ in plan.tensors}
    else:
        buffer = _host_bytes(plan.buffer_size)
        tensors = _plan_views(plan, buffer)
        checkpoint.load_into(plan, buffer.numpy(), threads or 0)
    return _place(tensors, convert)


def _exchange(checkpoint, plan, threads, rank, world_size, group) -> Dict[str, torch.Tensor]:
    """The plan's tensors on every rank, each rank reading 1/world_size of the buffer's bytes
    and all-gathering the rest through torch.distributed."""
    import torch.distributed as dist

    # Parts of whole 64-byte blocks: every cut falls between elements of any dtype.
    chunk = -(-plan.buffer_size // (world_size * 64)) * 64
    buffer = _host_bytes(chunk * world_size)
    tensors = _plan_views(plan, buffer)
    begin = min(rank * chunk, plan.buffer_size)
    end = min(begin + chunk, plan.buffer_size)
    checkpoint.load_into(plan, buffer.numpy(), threads or 0, (begin, end))
    mine = buffer[rank * chunk:(rank + 1) * chunk].clone()
    if hasattr(dist, "all_gather_into_tensor") and dist.get_backend(group) != "gloo":
        dist.all_gather_into_tensor(buffer, mine, group=group)
    else:  # gloo has no all_gather_into_tensor (nor has torch 1.13)
        dist.all_gather(list(buffer.chunk(world_size)), mine, group=group)
    return tensors


def load(data: bytes) -> Dict[str, torch.Tensor]:
    """The tensors of a safetensors file held in memory, in file order."""
    handle = safe_open._from_file(_core.File.from_bytes(data), "pt", "cpu")
    return handle.get_tensors()


def save_model(
    model: torch.nn.Module,
    filename: Union[str, os.PathLike],
    metadata: Optional[Dict[str, str]] = None,
    force_contiguous: bool = True,
) -> None:
    """Saves `model.state_dict()`, keeping one name per group of shared (tied) tensors; the
    dropped names are recorded in the metadata as {dropped: kept} unless already there (in a
    copy: the caller's `metadata` dict is left as it was)."""
    state_dict = model.state_dict()
    to_remove = _remove_duplicate_names(state_dict)
    if to_remove:
        metadata = {} if metadata is None else dict(metadata)
    for kept, dropped in to_remove.items():
        for name in dropped:
            metadata.setdefault(name, kept)
            del state_dict[name]
    if force_contiguous:
        state_dict = {name: tensor.contiguous() for name, tensor in state_dict.items()}
    try:
        save_file(state_dict, filename, metadata=metadata)
    except ValueError as error:
        raise ValueError(
            f"{error} Or use save_model(..., force_contiguous=True), read the docs for potential "
            "caveats."
        ) from error


def load_model(
    model: torch.nn.Module,
    filename: Union[str, os.PathLike],
    strict: bool = True,
    device: Union[str, int, torch.device] = "cpu",
    *,
    backend: str = "mmap",
    mmap: bool = True,
) -> Tuple[List[str], List[str]]:
    """Loads a file written by `save_model` (or `save_file`) into `model`.

    Names the model shares with others count as loaded when the file holds the kept one.
    Returns (missing, unexpected) names; with `strict`, raises RuntimeError when either is
    non-empty.
    """
    state_dict = load_file(filename, device=device, backend=backend, mmap=mmap)
    model_state_dict = model.state_dict()
    to_removes = _remove_duplicate_names(model_state_dict, preferred_names=state_dict.keys())
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = set(missing)
    for dropped in to_removes.values():
        for name in dropped:
            if name in missing:
                missing.remove(name)
            else:
                unexpected.append(name)
    if strict and (missing or unexpected):
        error = f"Error(s) in loading state_dict for {model.__class__.__name__}:"
        if missing:
            keys = ", ".join(f'"{k}"' for k in sorted(missing))
            error += f"\n    Missing key(s) in state_dict: {keys}"
        if unexpected:
            keys = ", ".join(f'"{k}"' for k in sorted(unexpected))
            error += f"\n    Unexpected key(s) in state_dict: {keys}"
        raise RuntimeError(error)
    return missing, unexpected
