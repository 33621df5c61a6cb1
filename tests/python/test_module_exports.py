"""The extension module exports its entry point and nothing else: symbols of the static
archives linked into it (our library, libz.a, a static libstdc++ some toolchains add) must not
interpose on those of modules imported later. On the GPU machine an exported libstdc++ runtime
made a later `import torch` abort with "free(): invalid pointer"."""

import shutil
import subprocess

import pytest

from libsafetensors import _core


def test_only_the_entry_point_is_exported():
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    listing = subprocess.run([nm, "-D", "--defined-only", _core.__file__], check=True,
                             capture_output=True, text=True).stdout
    exported = {line.split()[-1] for line in listing.splitlines() if line.strip()}
    assert exported == {"PyInit__core"}, sorted(exported)[:20]
