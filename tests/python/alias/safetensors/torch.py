"""Test-only alias of libsafetensors.torch (private helpers included)."""

import sys

import libsafetensors.torch as _impl

sys.modules[__name__] = _impl
