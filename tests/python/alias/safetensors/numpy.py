"""Test-only alias of libsafetensors.numpy (private helpers included)."""

import sys

import libsafetensors.numpy as _impl

sys.modules[__name__] = _impl
