"""TensorFlow helpers, as `safetensors.tensorflow`: save and load dicts of `tf.Tensor`.

Importing this module needs tensorflow, as the reference's does. Tensors go through numpy
both ways (`.numpy()` to save, `tf.convert_to_tensor` to load).
"""

import numpy as np
import tensorflow as tf

from libsafetensors._bridge import helpers, refuse

__all__ = ["save", "save_file", "load", "load_file"]


def _to_numpy(name, value):
    if isinstance(value, np.ndarray):
        return value
    if not isinstance(value, (tf.Tensor, tf.Variable)):
        refuse(name, value, "tf.Tensor")
    return value.numpy()


save, save_file, load, load_file = helpers("tf", "tf.Tensor", _to_numpy)
