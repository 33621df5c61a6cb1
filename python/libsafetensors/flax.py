"""JAX/Flax helpers, as `safetensors.flax`: save and load dicts of `jax.Array`.

Importing this module needs jax, as the reference's does. Arrays go through numpy both ways:
saving reads each array into host memory (`np.asarray`), loading makes `jnp.array`s on
JAX's default device from the file's bytes.
"""

import numpy as np
from jax import Array

from libsafetensors._bridge import helpers, refuse

__all__ = ["save", "save_file", "load", "load_file"]


def _to_numpy(name, value):
    if not isinstance(value, (Array, np.ndarray)):
        refuse(name, value, "jax.Array")
    return np.asarray(value)


save, save_file, load, load_file = helpers("flax", "jax.Array", _to_numpy)
