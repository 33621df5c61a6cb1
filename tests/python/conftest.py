"""Shared setup of the libsafetensors pytest suite.

Run with PYTHONPATH=<build>/python (ctest sets it). The alias package under alias/ makes
`import safetensors` resolve to libsafetensors for the tests written against the reference API.
"""

import os
import sys

import pytest

ALIAS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "alias")
if ALIAS_DIR not in sys.path:
    sys.path.insert(0, ALIAS_DIR)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "sparse: needs a scratch file system that keeps sparse files (huge files)")
    # Scratch files go where ctest wants them, one directory per run.
    scratch = os.environ.get("SAFETENSORS_TEST_TMP")
    if scratch and not config.option.basetemp:
        config.option.basetemp = os.path.join(scratch, f"pytest-{os.getpid()}")


@pytest.fixture
def path(tmp_path):
    """A fresh file name in this test's scratch directory."""
    return str(tmp_path / "test.safetensors")
