"""libsafetensors.install_as_safetensors(): `import safetensors` gives ours; names taken from
the reference before the call are rebound; uninstall puts everything back. Run in fresh
interpreters without the suite's alias package, which would make `safetensors` ours anyway."""

import subprocess
import sys
import textwrap

import pytest

from clients_support import PACKAGE_PARENT


def run(script, tmp_path):
    env = {"PYTHONPATH": PACKAGE_PARENT, "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=str(tmp_path),
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def has_reference(tmp_path):
    out = run("""
        import importlib.util
        print(importlib.util.find_spec("safetensors") is not None)
        """, tmp_path)
    return out.strip() == "True"


def test_imports_after_install_get_ours(tmp_path):
    run("""
        import sys
        import libsafetensors, libsafetensors.numpy, libsafetensors.torch
        assert libsafetensors.install_as_safetensors() == []
        import safetensors
        import safetensors.torch, safetensors.numpy
        from safetensors import safe_open, SafetensorError
        from safetensors.torch import save_file, load_file
        from safetensors._safetensors_rust import safe_open as rust_safe_open
        assert safetensors is libsafetensors
        assert safetensors.torch is libsafetensors.torch
        assert safetensors.numpy is libsafetensors.numpy
        assert safe_open is rust_safe_open is libsafetensors.safe_open
        assert save_file is libsafetensors.torch.save_file
        assert libsafetensors.install_as_safetensors() == []  # again: harmless
        libsafetensors.uninstall_as_safetensors()
        assert "safetensors" not in sys.modules or sys.modules["safetensors"] is not libsafetensors
        assert "safetensors.torch" not in sys.modules
        """, tmp_path)


def test_names_taken_before_install_are_rebound_and_restored(tmp_path):
    if not has_reference(tmp_path):
        pytest.skip("the reference safetensors is not installed here (the test venv has it)")
    # In a function: the script's own names (module-level ones would be rebound too) stay.
    run("""
      def main():
        import os, sys, types
        import safetensors, safetensors.torch
        from safetensors import safe_open, SafetensorError
        from safetensors.torch import save_file
        import libsafetensors, libsafetensors.torch

        reference = safetensors
        # A client module as transformers and diffusers hold these names.
        client = types.ModuleType("client")
        client.safe_open, client.save_file, client.safetensors = safe_open, save_file, safetensors
        client.error, client.torch, client.os = SafetensorError, safetensors.torch.torch, os
        client.format = "pt"
        sys.modules["client"] = client

        rebound = libsafetensors.install_as_safetensors()
        assert sorted(rebound) == ["client.error", "client.safe_open", "client.safetensors",
                                   "client.save_file"], rebound
        assert client.safe_open is libsafetensors.safe_open
        assert client.save_file is libsafetensors.torch.save_file
        assert client.safetensors is libsafetensors
        assert client.error is libsafetensors.SafetensorError
        assert client.torch is safetensors.torch.torch and client.os is os  # not theirs
        import safetensors as now
        assert now is libsafetensors
        # The reference's own modules are left as they were.
        assert reference.safe_open is safe_open and reference.torch.save_file is save_file

        libsafetensors.uninstall_as_safetensors()
        assert client.safe_open is safe_open and client.save_file is save_file
        assert client.safetensors is reference and client.error is SafetensorError
        import safetensors as again
        assert again is reference and sys.modules["safetensors.torch"] is reference.torch
      main()
        """, tmp_path)


def test_without_rebind_earlier_names_keep_the_reference(tmp_path):
    if not has_reference(tmp_path):
        pytest.skip("the reference safetensors is not installed here (the test venv has it)")
    run("""
        import sys, types
        from safetensors import safe_open
        import libsafetensors
        client = types.ModuleType("client")
        client.safe_open = safe_open
        sys.modules["client"] = client
        assert libsafetensors.install_as_safetensors(rebind=False) == []
        assert client.safe_open is safe_open
        from safetensors import safe_open as later
        assert later is libsafetensors.safe_open
        """, tmp_path)
