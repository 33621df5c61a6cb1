"""PaddlePaddle helpers, as `safetensors.paddle`: save and load dicts of `paddle.Tensor`.

Importing this module needs paddle, as the reference's does. Loading takes the reference's
`device` (a paddle place such as "cpu" or "gpu:0"). bfloat16 and float8 tensors keep their
dtype both ways, though paddle's numpy bridge has none of these types.
"""

import numpy as np
import paddle

from libsafetensors._bridge import helpers, refuse

__all__ = ["save", "save_file", "load", "load_file"]

# paddle dtypes whose `.numpy()` is their bits in another numpy type: saved by name, as bytes.
_BITS_ONLY = ("bfloat16", "float8_e4m3fn", "float8_e5m2")


def _to_numpy(name, value):
    if not isinstance(value, paddle.Tensor):
        refuse(name, value, "paddle.Tensor")
    if not value.is_contiguous():
        raise ValueError(f"tensor `{name}` is not contiguous: call `.contiguous()` on it to "
                         "save its values, or save the tensor it is a view of")
    array = value.cpu().numpy() if not value.place.is_cpu_place() else value.numpy()
    dtype = str(value.dtype).split(".")[-1]
    if dtype not in _BITS_ONLY:
        return array
    return {"dtype": dtype, "shape": list(value.shape),
            "data": array.reshape(-1).view(np.uint8) if array.size else b""}


save, save_file, load, load_file = helpers("paddle", "paddle.Tensor", _to_numpy, devices=True)
