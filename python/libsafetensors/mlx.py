"""MLX helpers, as `safetensors.mlx`: save and load dicts of `mlx.core.array`.

Importing this module needs mlx, as the reference's does. Arrays go through numpy both ways.
"""

import mlx.core as mx
import numpy as np

from libsafetensors._bridge import helpers, refuse

__all__ = ["save", "save_file", "load", "load_file"]


def _to_numpy(name, value):
    if not isinstance(value, (mx.array, np.ndarray)):
        refuse(name, value, "mlx.core.array")
    return np.asarray(value)


save, save_file, load, load_file = helpers("mlx", "mlx.core.array", _to_numpy)
