"""MLX helpers, as `safetensors.mlx`: save and load dicts of `mlx.core.array`.

Importing this module needs mlx, as the reference's does. Arrays go through numpy both ways;
bfloat16 arrays, which numpy cannot take from mlx (the reference fails on them), by their bits.
"""

import mlx.core as mx
import numpy as np

from libsafetensors._bridge import helpers, refuse

__all__ = ["save", "save_file", "load", "load_file"]


def _to_numpy(name, value):
    if isinstance(value, np.ndarray):
        return value
    if not isinstance(value, mx.array):
        refuse(name, value, "mlx.core.array")
    if value.dtype == mx.bfloat16:  # numpy cannot take it: saved as its bits, by name
        bits = np.asarray(value.view(mx.uint16))
        return {"dtype": "bfloat16", "shape": list(value.shape),
                "data": bits.reshape(-1).view(np.uint8) if bits.size else b""}
    return np.asarray(value)


save, save_file, load, load_file = helpers("mlx", "mlx.core.array", _to_numpy)
