"""The reference package `safetensors` 0.8, loaded as a test oracle next to ours.

conftest.py puts an alias package first on sys.path so that `import safetensors` means
libsafetensors; the oracle is imported from the rest of sys.path, with the alias's modules set
aside meanwhile, and kept under its own objects (`REF`, `REF_TORCH`, `REF_NUMPY`), never in
sys.modules. `load()` returns None when the reference 0.8 is not installed (e.g. Debian's
interpreter), so that differential tests can skip with a visible reason.
"""

import importlib
import os
import sys

ALIAS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "alias")
VERSION = "0.8.0"

_cache = {}


def _is_ours(name):
    return name == "safetensors" or name.startswith("safetensors.")


def load():
    """(safetensors, safetensors.torch or None, safetensors.numpy), or None without it."""
    if "ref" in _cache:
        return _cache["ref"]
    aside = {k: sys.modules.pop(k) for k in [k for k in sys.modules if _is_ours(k)]}
    path = sys.path[:]
    sys.path[:] = [p for p in path if os.path.abspath(p or ".") != ALIAS_DIR]
    result = None
    try:
        try:
            ref = importlib.import_module("safetensors")
        except ImportError:
            ref = None
        if ref is not None and getattr(ref, "__version__", None) == VERSION:
            ref_numpy = importlib.import_module("safetensors.numpy")
            try:
                ref_torch = importlib.import_module("safetensors.torch")
            except ImportError:
                ref_torch = None
            result = (ref, ref_torch, ref_numpy)
    finally:
        for k in [k for k in sys.modules if _is_ours(k)]:
            del sys.modules[k]
        sys.modules.update(aside)
        sys.path[:] = path
    _cache["ref"] = result
    return result


def require():
    """As load(), but skips the calling test module when the reference 0.8 is absent."""
    import pytest

    ref = load()
    if ref is None:
        pytest.skip(f"the reference safetensors=={VERSION} is not installed (differential tests "
                    "need it: use the test venv, scripts/install-deps.sh)", allow_module_level=True)
    return ref
