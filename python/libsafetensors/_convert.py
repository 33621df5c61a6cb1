"""Turning tensor bytes from `_core` into framework objects, without copying on the CPU.

A converter receives a `_core._Bytes` (a buffer that keeps the file mapping alive), the
safetensors dtype name and the shape. numpy arrays keep the buffer as their base and
torch.frombuffer holds a reference to it, so the mapping lives as long as any result does.
"""


from libsafetensors import _core
from libsafetensors._core import SafetensorError

# Every safetensors dtype as the extension's table gives it: (name, bits per element, torch
# attribute, numpy name, ml_dtypes attribute), a framework's name None where it has no such
# type. The dictionaries below are views of it.
_DTYPES = _core.dtypes()

# Bits per element of every safetensors dtype.
DTYPE_BITS = {name: bits for name, bits, _, _, _ in _DTYPES}

# Attribute names in torch; getattr decides whether the installed torch has them.
TORCH_DTYPES = {name: torch for name, _, torch, _, _ in _DTYPES if torch}

NUMPY_DTYPES = {name: numpy for name, _, _, numpy, _ in _DTYPES if numpy}

# Types numpy lacks but the optional package ml_dtypes adds, with the same byte layout.
ML_DTYPES = {name: ml for name, _, _, _, ml in _DTYPES if ml}

_DEVICE_PREFIXES = ("cuda", "mps", "npu", "xpu", "xla", "mlu", "musa", "hpu", "meta")


def numpy_dtype(name):
    import numpy as np

    if name in NUMPY_DTYPES:
        return np.dtype(NUMPY_DTYPES[name])
    if name in ML_DTYPES:
        try:
            import ml_dtypes

            return np.dtype(getattr(ml_dtypes, ML_DTYPES[name]))
        except (ImportError, AttributeError):
            why = f"numpy has no {ML_DTYPES[name]} type; install ml_dtypes for it"
    else:
        why = "numpy has no type with this layout"
    raise SafetensorError(f"dtype {name} cannot be loaded as a numpy array: {why}, or open the "
                          "file with framework='pt'")


def torch_dtype(torch, name):
    attr = TORCH_DTYPES.get(name)
    dtype = getattr(torch, attr, None) if attr else None
    if dtype is None:
        why = (f"torch.{attr} does not exist in torch {torch.__version__}" if attr
               else "torch has no type with this layout")
        raise SafetensorError(f"dtype {name} cannot be loaded as a torch tensor: {why}")
    return dtype


class representable:
    """Turns numpy's and torch's refusals of a shape the format allows (a dimension beyond
    int64, a rank above numpy's limit, a size whose product overflows) into SafetensorError
    naming the tensor. A class, not a contextlib generator: it wraps every tensor a load
    makes, and the generator's setup cost more than making a small tensor."""

    __slots__ = ("framework", "name", "shape")

    def __init__(self, framework, name, shape):
        self.framework, self.name, self.shape = framework, name, shape

    def __enter__(self):
        return None

    def __exit__(self, kind, error, traceback):
        if kind is None or not issubclass(kind, (ValueError, TypeError, OverflowError,
                                                 RuntimeError)):
            return False
        shape = self.shape
        what = "a torch tensor" if self.framework == "pt" else "a numpy array"
        shown = list(shape) if len(shape) <= 8 else f"[{', '.join(map(str, shape[:8]))}, ...]"
        raise SafetensorError(f"tensor {self.name} of shape {shown} (rank {len(shape)}) cannot "
                              f"be loaded as {what}: {error}") from None


def to_numpy(data, dtype, shape):
    import numpy as np

    np_dtype = numpy_dtype(dtype)
    if data.nbytes == 0:
        return np.zeros(shape, dtype=np_dtype)
    return np.frombuffer(data, dtype=np_dtype).reshape(shape)


def to_torch(torch, data, dtype, shape):
    t_dtype = torch_dtype(torch, dtype)
    shape = list(shape)
    if dtype == "F4" and shape:
        # float4_e2m1fn_x2 packs two F4 values into each element.
        shape[-1] //= 2
    if data.nbytes == 0:
        return torch.empty(shape, dtype=t_dtype, device="cpu")  # not the default device
    if data.address % max(DTYPE_BITS[dtype] // 8, 1):
        # Headers of odd length leave tensors misaligned; torch kernels assume alignment.
        return torch.frombuffer(data, dtype=torch.uint8).clone().view(t_dtype).reshape(shape)
    # Straight to the dtype: a uint8 tensor and a view of it cost twice the time, which
    # shows with many small tensors.
    tensor = torch.frombuffer(data, dtype=t_dtype)
    return tensor if len(shape) == 1 else tensor.view(shape)


def torch_tensors(convert, file, data, entries, spans):
    """Every tensor of a mapped file (`file.layout()`: the data as one view, per tensor in file
    order name, dtype, shape, offset, and per dtype the span of its tensors) as strided views,
    one storage per dtype over that span: one strided view each costs about a third of making
    a tensor from its own buffer. Per dtype, because torch.save refuses tensors of different
    dtypes that share a storage; writers group tensors by dtype, so the storages do not overlap
    and a torch.save of the result writes each byte once. Tensors a view cannot give (an empty
    one, F4, a dtype this torch lacks, one misaligned for its dtype, a shape torch refuses as a
    view) are made one by one, as get_tensor makes them."""
    torch = convert.torch
    address = data.address
    views = {}  # dtype name -> (its storage as a 1-d tensor, its offset in the data, its width)
    for dtype, (first, end) in spans.items():
        attr = TORCH_DTYPES.get(dtype)
        t_dtype = getattr(torch, attr, None) if attr and dtype != "F4" else None
        width = DTYPE_BITS[dtype] // 8
        if t_dtype is None or not width or address % width:
            continue
        first = -(-first // width) * width  # the first tensor a view can give starts here or later
        if end - first >= width:
            views[dtype] = (torch.frombuffer(data, dtype=t_dtype, count=(end - first) // width,
                                             offset=first), first, width)
    out = {}
    for name, dtype, shape, offset in entries:
        view = views.get(dtype)
        if view is not None and 0 not in shape:
            storage, first, width = view
            if not offset % width:
                if len(shape) == 1:
                    strides = (1,)
                else:
                    strides = [1] * len(shape)
                    for i in range(len(shape) - 1, 0, -1):
                        strides[i - 1] = strides[i] * shape[i]
                try:
                    out[name] = storage.as_strided(shape, strides, (offset - first) // width)
                    continue
                except (ValueError, TypeError, OverflowError, RuntimeError):
                    pass  # a shape torch refuses: made below, which names the tensor in the error
        out[name] = convert.tensor(file.tensor(name), dtype, shape, name)
    return out


def device_for(device_map, name):
    """The entry of `device_map` (a dict of tensor names or module prefixes to devices) for
    tensor `name`: its own, its closest enclosing module's, then the "" default; None when
    none covers it."""
    parts = name.split(".")
    while parts:
        prefix = ".".join(parts)
        if prefix in device_map:
            return device_map[prefix]
        parts.pop()
    return device_map.get("")


class Converter:
    """Builds one framework's tensors on one device (or a per-tensor device map)."""

    def __init__(self, framework, device):
        self.framework = framework
        if framework == "pt":
            import torch

            self.torch = torch
            self.device = self._torch_device(device)
        elif framework == "paddle":
            self.maker = _paddle_maker(device)
        else:
            if not _is_cpu(device):
                raise SafetensorError(f"Device {device} is not supported for framework "
                                      f"{_DISPLAY[framework]}")
            self.maker = _MAKERS[framework]()

    def _torch_device(self, device):
        if isinstance(device, dict):
            return {name: self._torch_device(value) for name, value in device.items()}
        if device is None or _is_cpu(device):
            return None
        if isinstance(device, str):
            base = device.split(":", 1)[0]
            if base not in _DEVICE_PREFIXES:
                raise SafetensorError(f"device {device} is invalid")
        try:
            return self.torch.device(device)
        except (RuntimeError, TypeError, ValueError) as error:
            if isinstance(device, int) and isinstance(error, RuntimeError):
                # An index names the accelerator; without one, torch's own error, as the
                # reference gives it.
                raise
            raise SafetensorError(f"device {device} is invalid") from error

    def _device_for(self, name):
        device = self.device
        if not isinstance(device, dict):
            return device
        return device_for(device, name)  # None (cpu) when no entry covers it

    def tensor(self, data, dtype, shape, name):
        if self.framework == "pt":
            with representable("pt", name, shape):
                tensor = to_torch(self.torch, data, dtype, shape)
            device = self._device_for(name)
            return tensor if device is None else tensor.to(device)
        return self.maker.tensor(data, dtype, shape, name)

    def concat(self, pieces, dim):
        if self.framework == "pt":
            return self.torch.cat(pieces, dim=dim)
        return self.maker.concat(pieces, dim)


class _NumpyMaker:
    """Arrays of a framework that takes numpy arrays as they are (`finish`: numpy to it)."""

    def __init__(self, finish):
        self.finish = finish

    def tensor(self, data, dtype, shape, name):
        with representable("np", name, shape):
            array = to_numpy(data, dtype, shape)
        return self.finish(array)

    def concat(self, pieces, dim):
        import numpy as np

        return self.finish(np.concatenate([np.asarray(p) for p in pieces], axis=dim))


class _BitsMaker:
    """Arrays of a framework whose numpy bridge lacks some of its dtypes (paddle's has no
    bfloat16 or float8, its `.numpy()` giving their bits as uint16 and int8; mlx's has no
    bfloat16): those come in as their bits and are viewed as the framework's dtype, so that
    no ml_dtypes is needed. `make(array)` makes the framework's array of a numpy one, `view`
    maps a safetensors dtype to (numpy type of its bits, the framework's dtype)."""

    def __init__(self, make, view, concat):
        self.make, self.view, self.concat = make, view, concat

    def tensor(self, data, dtype, shape, name):
        import numpy as np

        viewed = self.view.get(dtype)
        with representable("np", name, shape):
            if viewed is None:
                array = to_numpy(data, dtype, shape)
            else:
                array = (np.frombuffer(data, dtype=viewed[0]) if data.nbytes
                         else np.zeros(0, viewed[0])).reshape(shape)
        made = self.make(array)
        return made if viewed is None else made.view(viewed[1])


def _paddle_maker(device):
    """paddle tensors on `device`, a paddle place ("cpu", "gpu:0") or the reference's name."""
    import paddle

    if device is None:
        device = "cpu"
    elif isinstance(device, str) and device.split(":", 1)[0] == "cuda":
        # The reference's device names onto paddle's places, "cuda" being device 0.
        device = "gpu" + (device[4:] or ":0")
    # Those of these dtypes this paddle has (its float8 types are recent).
    view = {name: (bits, getattr(paddle, attr))
            for name, bits, attr in (("BF16", "uint16", "bfloat16"),
                                     ("F8_E4M3", "uint8", "float8_e4m3fn"),
                                     ("F8_E5M2", "uint8", "float8_e5m2"))
            if hasattr(paddle, attr)}
    return _BitsMaker(lambda array: paddle.to_tensor(array, place=device), view,
                      lambda pieces, dim: paddle.concat(pieces, axis=dim))


def _mlx_maker():
    import mlx.core as mx

    return _BitsMaker(mx.array, {"BF16": ("uint16", mx.bfloat16)},
                      lambda pieces, dim: mx.concatenate(pieces, axis=dim))


def _is_cpu(device):
    return device is None or (isinstance(device, str) and device == "cpu") or str(device) == "cpu"


def _tensorflow_maker():
    import tensorflow as tf

    return _NumpyMaker(tf.convert_to_tensor)


def _flax_maker():
    import jax.numpy as jnp

    return _NumpyMaker(jnp.array)


# How arrays of each framework but torch and paddle (which take a device) are made.
_MAKERS = {
    "np": lambda: _NumpyMaker(lambda array: array),
    "tf": _tensorflow_maker,
    "flax": _flax_maker,
    "mlx": _mlx_maker,
}
_DISPLAY = {"np": "numpy", "tf": "tensorflow", "flax": "flax", "mlx": "mlx", "paddle": "paddle"}
