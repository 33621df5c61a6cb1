"""Test-only alias: `import safetensors` resolves to libsafetensors, so that code written for the
reference package (its own test suites included) runs unchanged against ours."""

import libsafetensors as _impl
from libsafetensors import *  # noqa: F401,F403
from libsafetensors import (  # noqa: F401
    SafetensorError,
    TensorSpec,
    __version__,
    _safe_open_handle,
    deserialize,
    safe_open,
    serialize,
    serialize_file,
    serialize_file_threadable,
)

__doc__ = _impl.__doc__
