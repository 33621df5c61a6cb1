"""device_map planning for one machine: `plan_device_map`, and what loading with a map needs
(which device each tensor goes to). docs/PARALLEL.md describes the planner; loading is
`libsafetensors.torch.load_checkpoint(path, device_map=...)`.

No torch import here: the planner reads headers only.
"""

import numbers
import re

from libsafetensors import _core

# Device names besides GPUs given as indexes: the accelerators torch knows by these prefixes.
_ACCELERATORS = ("cuda", "mps", "npu", "xpu", "xla", "mlu", "musa", "hpu")
_DEVICE = re.compile(r"^(?:cpu|disk|\d+|(?:%s)(?::\d+)?)$" % "|".join(_ACCELERATORS))
# dtype arguments, as torch dtypes print (less "torch.") or as safetensors and the CLI name
# them: floating-point tensors are counted (and loaded) at this size.
_DTYPES = {
    "float16": "F16", "half": "F16", "f16": "F16", "F16": "F16",
    "bfloat16": "BF16", "bf16": "BF16", "BF16": "BF16",
    "float32": "F32", "float": "F32", "f32": "F32", "F32": "F32",
}  # fmt: skip


class DeviceMap(dict):
    """A device_map: {module or tensor name: device}, in checkpoint order, as accelerate's
    infer_auto_device_map returns it; pass it to transformers' `from_pretrained(device_map=)`
    or to `load_checkpoint(device_map=)`. GPUs given as integers in `max_memory` come back as
    integers, other devices as the strings given ("cuda:0", "cpu", "disk").

    Attributes:
        used: {device: bytes placed there}, every device in fill order (those given nothing
            included; "disk" always last).
        module_bytes: {module: bytes}, as counted (at `dtype` where given).
    """

    def __init__(self, modules=(), used=(), module_bytes=None):
        super().__init__(modules)
        self.used = dict(used)
        self.module_bytes = dict(module_bytes or {})

    def __repr__(self):
        return f"DeviceMap({dict.__repr__(self)}, used={self.used!r})"

    def __reduce__(self):
        return (DeviceMap, (dict(self), self.used, self.module_bytes))


def device_name(device):
    """The planner's name of a device given as int, str or torch.device; ValueError if unknown."""
    if isinstance(device, bool):
        raise ValueError(f"device {device!r} is not a device")
    if isinstance(device, numbers.Integral):
        if device < 0:
            raise ValueError(f"device {device} is negative")
        return str(int(device))
    text = str(device) if type(device).__name__ == "device" else device
    if not isinstance(text, str) or not _DEVICE.match(text):
        raise ValueError(
            f"device {device!r} is unknown: expected a GPU index, 'cuda:N', 'cpu', 'disk' or "
            f"an accelerator ({', '.join(_ACCELERATORS)}), optionally with ':N'")
    return text


def dtype_name(dtype):
    """The safetensors name of `dtype` (torch.float16, "bf16", "F32", ...), or None."""
    if dtype is None:
        return None
    text = str(dtype)
    text = text[len("torch."):] if text.startswith("torch.") else text
    name = _DTYPES.get(text)
    if name is None:
        raise ValueError(f"dtype {dtype!r} is not one the planner counts at: expected "
                         "float16, bfloat16 or float32 (torch dtypes or names), or None")
    return name


def _size_text(device, size):
    if isinstance(size, bool) or not isinstance(size, (numbers.Integral, str)):
        raise ValueError(f"max_memory[{device!r}] = {size!r}: expected a number of bytes or a "
                         "size such as '20GiB' or '500MB'")
    if isinstance(size, numbers.Integral):
        if size < 0:
            raise ValueError(f"max_memory[{device!r}] = {size} is negative")
        return str(int(size))
    return size


def plan_device_map(checkpoint, max_memory, no_split=None, dtype=None):
    """Assigns a checkpoint's modules to devices under per-device budgets, as accelerate's
    infer_auto_device_map does, from the headers alone (no tensor is read).

    Args:
        checkpoint: a path (directory, index or single file) or an open `Checkpoint`.
        max_memory: {device: budget}; devices are GPU indexes (0, "0"), "cuda:N", other
            accelerators ("xpu:0"), "cpu" and "disk"; budgets are bytes (int) or sizes as
            `safetensors plan --max-memory` takes them ("20GiB", "500MB"). Devices are filled
            in this order: GPUs by index, other accelerators, cpu, then disk, which is
            unbounded and added when absent.
        no_split: modules never split across devices, by name or with layer numbers written
            `*` ("model.layers.*"): transformers' `_no_split_modules` as prefixes.
        dtype: count floating-point tensors at this size (torch.float16, "bf16", ...), as
            `load_checkpoint(dtype=)` would load them.

    Returns:
        a `DeviceMap`: {module: device} (a dict, transformers' `device_map`) with `.used`
        ({device: bytes}) and `.module_bytes`.

    A module goes whole to the current device when it fits in what is left of its budget;
    otherwise it is split into its submodules (unless in `no_split`, or a tensor) or the next
    device is taken. Raises ValueError for an unknown device, a device named twice, a budget
    that is not a size, or a dtype the planner does not count at.
    """
    from libsafetensors import Checkpoint

    if not isinstance(max_memory, dict) or not max_memory:
        raise ValueError(f"max_memory must be a non-empty dict {{device: budget}}, not "
                         f"{max_memory!r}")
    if isinstance(no_split, str):
        no_split = [no_split]
    no_split = list(no_split or [])
    if not all(isinstance(m, str) for m in no_split):
        raise ValueError(f"no_split must be module names (str), not {no_split!r}")
    budgets, given, seen = [], {}, {}
    for device, size in max_memory.items():
        name = device_name(device)
        same = "cuda:" + name if name.isdigit() else name  # 0, "0" and "cuda:0" are one GPU
        if same in seen:
            raise ValueError(f"max_memory names device {same!r} twice ({seen[same]!r} and "
                             f"{device!r})")
        seen[same] = given[name] = device
        budgets.append((name, _size_text(device, size)))
    if not isinstance(checkpoint, _core.Checkpoint):
        checkpoint = Checkpoint(checkpoint)
    modules, used = checkpoint._plan_device_map(budgets, no_split, dtype_name(dtype))

    def shown(name):  # the caller's own key: integer GPUs stay integers
        device = given.get(name, name)
        return int(device) if isinstance(device, numbers.Integral) else name

    return DeviceMap(((m, shown(d)) for m, d, _ in modules), ((shown(d), b) for d, b in used),
                     {m: b for m, _, b in modules})
