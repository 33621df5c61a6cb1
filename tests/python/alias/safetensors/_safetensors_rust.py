"""Test-only alias of the reference's native module name, onto libsafetensors."""

import sys

import libsafetensors as _impl

sys.modules[__name__] = _impl
