"""`safe_open`: lazy access to the tensors of a file, as the reference's safe_open."""

import numbers
import operator

from libsafetensors import _core
from libsafetensors._collector import collector_paused_during
from libsafetensors._convert import DTYPE_BITS, Converter, torch_tensors
from libsafetensors._core import SafetensorError
from libsafetensors._prefetch import (
    _check_prefetch,
    _check_prefetch_device,
    _DeviceLoader,
    _PrefetchHandle,
)

_FRAMEWORKS = {
    "pt": "pt", "torch": "pt", "pytorch": "pt", "np": "np", "numpy": "np",
    "tf": "tf", "tensorflow": "tf", "jax": "flax", "flax": "flax", "mlx": "mlx",
    "paddle": "paddle",
}  # fmt: skip
# "read_file" is a later reference release's name for positional reads.
_BACKENDS = {"mmap": "mmap", "pread": "pread", "read_file": "pread"}


def _framework(name):
    framework = _FRAMEWORKS.get(name) if isinstance(name, str) else None
    if framework is None:
        raise SafetensorError(f"framework {name} is invalid")
    return framework


def _backend(name, mmap):
    backend = _BACKENDS.get(name) if isinstance(name, str) else None
    if backend is None:
        raise SafetensorError(f"backend {name} is invalid: expected one of mmap, pread")
    return backend if mmap else "pread"


class _CudaLoads:
    """safe_open's way onto one CUDA device through the library's device path (pinned staging
    ring, asynchronous copies: `load_checkpoint(device=...)`), when the library finds the CUDA
    runtime. Tensors below `min_bytes` keep torch's `.to(device)`: one pass through the ring
    has a fixed cost (threads, streams, events) that a small copy does not repay."""

    min_bytes = 8 << 20  # one staging slot

    def __init__(self, filename, target):
        self._filename = filename
        self._target = target
        self._checkpoint = None

    @classmethod
    def for_handle(cls, filename, convert):
        if convert.framework != "pt" or isinstance(convert.device, dict):
            return None
        from libsafetensors import _device

        target = _device.cuda_target(convert.torch, convert.device)
        if target is None or _device.cuda_unavailable_reason() is not None:
            return None
        return cls(filename, target)

    def worth_it(self, dtype, shape):
        count = 1
        for size in shape:
            count *= size
        return count * DTYPE_BITS[dtype] // 8 >= self.min_bytes

    def load(self, names):
        from libsafetensors import Checkpoint
        from libsafetensors.torch import load_checkpoint

        if self._checkpoint is None:
            self._checkpoint = Checkpoint(self._filename)
        return load_checkpoint(self._checkpoint, names=names, device=self._target)


class safe_open:  # noqa: N801 - the reference's name
    """Opens a safetensors file lazily and returns tensors as asked.

    Args:
        filename (`str`, `bytes` or `os.PathLike`): the file to open, any name `os.open` takes.
        framework (`str`): `pt` (also `torch`, `pytorch`) or `np` (`numpy`); `tf`, `flax`,
            `mlx` and `paddle` convert from numpy when those packages are installed.
        device (`str`, `int`, `torch.device` or `dict`, defaults to `"cpu"`): where tensors go
            (torch only); a dict maps tensor names or module prefixes to devices, `""` being
            the default.
        backend (`str`, defaults to `"mmap"`): `mmap` returns zero-copy views of a private
            copy-on-write mapping; `pread` reads each tensor into its own memory.
        mmap (`bool`, defaults to `True`): `False` is the same as `backend="pread"`.
        prefetch (`bool`, defaults to `False`): with `backend="pread"`, `framework="pt"` and a
            CUDA device, starts loading every tensor onto the device in the background as the
            file opens. Each tensor is then handed out once, by `get_tensor` or by
            `tensor_stream()`, whichever asks first; asking again raises. Closing the file
            stops the loading.

    Use as a context manager; after the `with` block every call raises "File is closed", while
    tensors already returned stay valid.
    """

    def __init__(self, filename, framework, device="cpu", *, backend="mmap", mmap=True,
                 prefetch=False):
        self._framework = _framework(framework)
        backend = _backend(backend, mmap)
        self._loader = None
        if prefetch:
            _check_prefetch(self._framework, backend)
        self._convert = Converter(self._framework, device)
        if prefetch:
            _check_prefetch_device(self._convert, device)
        self._file = _core.File.open(filename, backend)
        self._cuda = None
        if prefetch:
            self._loader = _DeviceLoader(self._file, self._convert)
        else:
            self._cuda = _CudaLoads.for_handle(filename, self._convert)

    @classmethod
    def _from_file(cls, file, framework, device):
        self = cls.__new__(cls)
        self._loader = None
        self._cuda = None
        self._framework = _framework(framework)
        self._convert = Converter(self._framework, device)
        self._file = file
        return self

    def _open_file(self):
        if self._file is None:
            raise SafetensorError("File is closed")
        return self._file

    def _populate(self, names=None, threads=0):
        """Reads every page of the tensor data (of the tensors `names`, when given) into memory
        now, in parallel at the speed of a sequential read (a mapped file; nothing to do
        otherwise)."""
        self._open_file().populate(threads, names)

    def metadata(self):
        """The `__metadata__` dict of the header, or None."""
        return self._open_file().metadata()

    def keys(self):
        """Tensor names, sorted."""
        return self._open_file().keys()

    def offset_keys(self):
        """Tensor names in the order of their data in the file."""
        return self._open_file().offset_keys()

    def get_tensor(self, name):
        """The whole tensor `name` in the framework of this handle.

        With `prefetch=True` each tensor is handed out once: asking again, or for one that
        `tensor_stream()` already yielded, raises SafetensorError.
        """
        file = self._open_file()
        if self._loader is not None:
            return self._loader.take(name)
        dtype, shape = file.info(name)
        if self._cuda is not None and self._cuda.worth_it(dtype, shape):
            return self._cuda.load([name])[name]
        return self._convert.tensor(file.tensor(name), dtype, shape, name)

    def tensor_stream(self):
        """Yields (name, tensor) for every tensor not yet taken, as each reaches the device.

        Needs `prefetch=True`. The order is the order the loading finishes in, not a promise;
        use it inside the `with` block: once the file is closed, the next step raises.
        """
        self._open_file()
        if self._loader is None:
            raise SafetensorError("tensor_stream() needs a file opened with prefetch=True")
        return self._loader.stream()

    @collector_paused_during
    def get_tensors(self):
        """Every tensor, in file order."""
        file = self._open_file()
        if self._loader is None:
            if self._cuda is not None:
                loaded = self._cuda.load(None)  # one pass through the pinned ring for all
                return {name: loaded[name] for name in file.offset_keys()}
            convert = self._convert
            if convert.framework == "pt" and convert.device is None:
                layout = file.layout()
                if layout is not None:
                    return torch_tensors(convert, file, *layout)
        return {name: self.get_tensor(name) for name in self.offset_keys()}

    def iter_tensors(self):
        """Yields (name, tensor) in file order."""
        for name in self.offset_keys():
            yield name, self.get_tensor(name)

    def get_slice(self, name):
        """A lazy handle on `name`; index it (ints, slices with steps, `...`) to read a part."""
        file = self._open_file()
        dtype, shape = file.info(name)
        return _SafeSlice(file, name, dtype, shape, self._convert)

    def get_strided_slice(self, name, dim, intervals):
        """The concatenation along `dim` of the [start, stop) `intervals` of tensor `name`."""
        file = self._open_file()
        _, shape = file.info(name)
        rank = len(shape)
        if not -rank <= dim < rank:
            raise SafetensorError(f"dimension {dim} is out of range for tensor {name} of shape "
                                  f"{shape}")
        dim %= rank
        intervals = list(intervals)
        if not intervals:
            raise SafetensorError(f"get_strided_slice of {name}: no intervals given")
        pieces = []
        for start, stop in intervals:
            if not 0 <= start < stop <= shape[dim]:
                raise SafetensorError(f"get_strided_slice of {name}: interval [{start}, {stop}) "
                                      f"is empty or outside dimension {dim} of size {shape[dim]}")
            key = (slice(None),) * dim + (slice(start, stop),)
            pieces.append(self.get_slice(name)[key])
        return pieces[0] if len(pieces) == 1 else self._convert.concat(pieces, dim)

    def prefetch(self, names, dtype=None, max_inflight=4):
        """Starts reading the tensors `names` in the background; returns an iterator of
        (name, tensor) pairs in the order asked.

        `len()` of the handle is the number of pairs not yet taken; iterating takes them, once.
        `max_inflight` bounds the tensors read ahead of the consumer. `dtype` is accepted for
        the reference's signature; only None is supported (convert the tensors yourself).
        """
        file = self._open_file()
        if dtype is not None:
            raise SafetensorError(f"prefetch: dtype {dtype} is not supported, only None")
        if not isinstance(max_inflight, int) or max_inflight < 1:
            raise ValueError(f"max_inflight must be a positive integer, not {max_inflight!r}")
        names = [names] if isinstance(names, str) else list(names)
        for name in names:
            file.info(name)  # an absent name fails now, not in the middle of the iteration
        convert = self._convert

        def read(name):
            dtype, shape = file.info(name)
            return convert.tensor(file.tensor(name), dtype, shape, name)

        return _PrefetchHandle(read, names, max_inflight)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self._close()

    def _close(self, join=True):
        loader = getattr(self, "_loader", None)
        if loader is not None:
            loader.close(join)
        self._file = None
        self._cuda = None

    def __del__(self):
        self._close(join=False)


class _SafeSlice:
    """What `safe_open.get_slice` returns: shape and dtype now, data when indexed."""

    def __init__(self, file, name, dtype, shape, convert):
        self._file = file
        self._name = name
        self._dtype = dtype
        self._shape = shape
        self._convert = convert

    def get_shape(self):
        """The shape of the whole tensor."""
        return list(self._shape)

    def get_dtype(self):
        """The safetensors dtype name, e.g. "F32"."""
        return self._dtype

    @property
    def shape(self):
        return list(self._shape)

    @property
    def dtype(self):
        return self._dtype

    def __getitem__(self, key):
        if self._convert.framework == "pt":
            return self._torch_item(key)
        return self._read(slice_arguments(key, self._shape))

    def _torch_item(self, key):
        """`key` with torch's indexing semantics, as the reference gives for framework="pt":
        bounds clamp, out-of-range indexes raise IndexError, `None` and lists work. Plain keys
        (ints, slices with positive steps, one `...`) are read from the file directly; anything
        else indexes the whole tensor, so that results and errors are torch's own."""
        _refuse_booleans(key)
        args = None if self._dtype == "F4" else _torch_slice_arguments(key, self._shape)
        if args is not None:
            return self._read(args)
        whole = self._convert.tensor(self._file.tensor(self._name), self._dtype, self._shape,
                                     self._name)
        return whole[key]

    def _read(self, args):
        if 0 in self._shape:
            # Nothing to read. Only such tensors may have dimensions beyond int64, which the
            # library's slice arguments cannot carry.
            data, shape = memoryview(b""), _sliced_shape(args, self._shape)
        else:
            data, shape = self._file.slice(self._name, args)
        return self._convert.tensor(data, self._dtype, shape, self._name)


def slice_arguments(key, shape):
    """Turns an index expression into `_core.File.slice` arguments, one per dimension.

    Semantics are the reference's for numpy and the frameworks built on it (torch: see
    `_SafeSlice._torch_item`): negative positions count from the end; an index outside the
    dimension, or a slice starting at or after its end (so any slice of an empty dimension) or
    stopping after it, is an error; steps must be positive, `...` stands for the dimensions not
    named, and an empty list selects nothing. Negative slice bounds (which the reference fails
    on with OverflowError) and ranges that end before they start (SystemError) are Python's.
    Booleans are refused: numpy reads them as masks, the reference as the integers 0 and 1.
    Ranges come back with start and step at most the dimension's size, which selects the same.
    """
    if isinstance(key, list):
        if key:
            raise SafetensorError("Non empty lists are not implemented")
        items = [slice(0, 0)]
    elif isinstance(key, tuple):
        items = list(key)
    else:
        items = [key]

    ellipses = [i for i, item in enumerate(items) if item is Ellipsis]
    if len(ellipses) > 1:
        raise SafetensorError("An index can only have a single ellipsis ('...')")
    if ellipses:
        at = ellipses[0]
        fill = max(len(shape) - (len(items) - 1), 0)
        items = items[:at] + [slice(None)] * fill + items[at + 1:]

    parsed = [_parse_item(i, item, shape) for i, item in enumerate(items)]
    shown = "[" + ", ".join(text for text, _ in parsed) + "]"
    if len(items) > len(shape):
        raise SafetensorError(f"Error during slicing {shown} with shape {list(shape)}: "
                              "more slicing indexes than dimensions in tensor")
    args = []
    # The reference checks the last dimension first; keep its choice of reported error.
    for dim in reversed(range(len(parsed))):
        arg = parsed[dim][1]
        size = shape[dim]
        asked = arg[0] if len(arg) == 1 or arg[0] >= size else arg[1] - 1
        if arg[0] >= size or (len(arg) == 3 and arg[1] > size):
            raise SafetensorError(
                f"Error during slicing {shown} with shape {list(shape)}: index {asked} out of "
                f"bounds for tensor dimension #{dim} of size {size}")
        args.append(arg)
    args.reverse()
    return args


def _refuse_booleans(key):
    for dim, item in enumerate(key if isinstance(key, tuple) else (key,)):
        if isinstance(item, bool) or type(item).__name__ in ("bool_", "bool"):
            raise SafetensorError(f"Unsupported slice index {item!r} at position {dim}: "
                                  "booleans are not indexes (numpy reads them as masks, torch "
                                  "as a new axis, the reference as 0 and 1); use 0 or 1")


def _torch_slice_arguments(key, shape):
    """`_core.File.slice` arguments for a key torch would take as plain basic indexing of a
    tensor of `shape`, or None for any other key (torch then decides, errors included)."""
    items = list(key) if isinstance(key, tuple) else [key]
    ellipses = 0
    for item in items:
        if item is Ellipsis:
            ellipses += 1
        elif not isinstance(item, slice) and not _is_int(item):
            return None
    if ellipses > 1:
        return None
    if ellipses:
        at = items.index(Ellipsis)
        items[at:at + 1] = [slice(None)] * max(len(shape) - (len(items) - 1), 0)
    if len(items) > len(shape):
        return None
    args = []
    for item, size in zip(items, shape):
        if isinstance(item, slice):
            # Bounds beyond 64 bits clamp as Python's own slices do (torch truncates them).
            bounds = (item.start, item.stop, item.step)
            if not all(v is None or _is_int(v) for v in bounds):
                return None
            if item.step is not None and item.step <= 0:
                return None
            start, stop, step = slice(*(None if v is None else int(v) for v in bounds)).indices(
                size)
            args.append((start, max(start, stop), min(step, max(size, 1))))
        else:
            if not -size <= item < size:
                return None
            args.append((int(item) % size,))
    return args


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _parse_item(dim, item, shape):
    """(text for messages, (index,) or (start, stop, step)) for one dimension."""
    size = shape[dim] if dim < len(shape) else 0
    if isinstance(item, slice):
        start, stop, step = (None if v is None else _integer(v, dim) for v in
                             (item.start, item.stop, item.step))
        text = f"{'' if start is None else start}:{'' if stop is None else stop}"
        if step is not None and step != 1:
            text += f":{step}"
        if step is not None and step <= 0:
            raise SafetensorError(f"Slice step must be a positive integer, got {step}")
        # Negative bounds count from the end and clamp, and a range that ends before it
        # starts is empty, as in Python (the reference fails there: OverflowError,
        # SystemError). A start at or after the end is refused in slice_arguments.
        start = 0 if start is None else max(start + size, 0) if start < 0 else start
        stop = size if stop is None else max(stop + size, 0) if stop < 0 else stop
        stop = max(stop, min(start, size))
        step = 1 if step is None else min(step, max(size, 1))
        return text, (start, stop, step)
    _refuse_booleans((None,) * dim + (item,))
    index = _integer(item, dim)
    if index < 0:
        if index + size < 0:
            raise SafetensorError(f"Invalid index {index} for dimension {dim} of size {size}")
        index += size
    return str(index), (index,)


def _sliced_shape(args, shape):
    """The shape `slice_arguments`' `args` select from `shape`, without reading anything."""
    out = []
    for dim, size in enumerate(shape):
        arg = args[dim] if dim < len(args) else (0, size, 1)
        if len(arg) == 3:
            start, stop, step = arg
            out.append(max(0, -(-(stop - start) // step)))
    return out


def _integer(value, dim):
    try:
        return operator.index(value)
    except TypeError:
        raise SafetensorError(f"Unsupported slice index {value!r} at position {dim}: expected "
                              "slice, int, or ellipsis (or [] alone)") from None
