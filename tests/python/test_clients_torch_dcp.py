"""torch.distributed.checkpoint's Hugging Face storage as a real client: it writes with
`safetensors.torch.save`, reads with `safe_open` and `safetensors.torch._getdtype`, and
consolidates shards with `_getdtype` too. Run in fresh single-process interpreters, once with
libsafetensors installed as `safetensors` and once with the reference: the files must be the
same bytes, each side must read the other's, and the consolidated file must hold the tensors."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from clients_support import PACKAGE_PARENT

pytest.importorskip("torch.distributed.checkpoint")
if not hasattr(__import__("torch.distributed.checkpoint").distributed.checkpoint,
               "HuggingFaceStorageWriter"):
    pytest.skip(f"torch {torch.__version__} has no HuggingFaceStorageWriter (torch >= 2.8)",
                allow_module_level=True)

SCRIPT = """
import json, os, sys, warnings
warnings.simplefilter("ignore")
side, write_dir, read_dir, out = sys.argv[1:5]
if side == "ours":
    import libsafetensors
    libsafetensors.install_as_safetensors()
import safetensors, torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import HuggingFaceStorageReader, HuggingFaceStorageWriter
from torch.distributed.checkpoint._consolidate_hf_safetensors import (
    consolidate_safetensors_files)
generator = torch.Generator().manual_seed(3)
# Floating-point tensors of rank 1 or more only: torch's consolidation takes torch.finfo of
# every dtype, and copies a 0-d tensor wrong (torch 2.13, with the reference as with ours).
state = {"embed.weight": torch.randn(16, 8, generator=generator),
         "head.bias": torch.randn(5, generator=generator, dtype=torch.float64),
         "norm.weight": torch.randn(8, generator=generator).to(torch.bfloat16),
         "scale": torch.tensor([0.5, -2.0], dtype=torch.float16)}
dcp.save(state, storage_writer=HuggingFaceStorageWriter(write_dir), no_dist=True)
loaded = {name: torch.zeros_like(tensor) for name, tensor in state.items()}
dcp.load(loaded, storage_reader=HuggingFaceStorageReader(read_dir), no_dist=True)
same = {name: bool(torch.equal(loaded[name], state[name])) for name in state}
consolidated = write_dir + "-consolidated"
os.makedirs(consolidated, exist_ok=True)
consolidate_safetensors_files(write_dir, consolidated, {"embed.weight": 1, "head.bias": 1,
                                                        "norm.weight": 2, "scale": 2})
from safetensors.torch import load_file
files = sorted(f for f in os.listdir(consolidated) if f.endswith(".safetensors"))
merged = {}
for name in files:
    merged.update(load_file(os.path.join(consolidated, name)))
merged_same = sorted(merged) == sorted(state) and all(
    torch.equal(merged[name], state[name]) for name in state)
json.dump({"module": safetensors.__file__, "read_back": same, "consolidated": merged_same},
          open(out, "w"))
"""


def run_side(side, write_dir, read_dir, tmp_path):
    out = str(tmp_path / f"{side}.json")
    env = {"PYTHONPATH": PACKAGE_PARENT, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), side,
                             str(write_dir), str(read_dir), out],
                            cwd=str(tmp_path), env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    with open(out) as f:
        return json.load(f)


def safetensors_files(folder):
    """{file name: (header as parsed JSON, bytes after the header)} of a folder's files: the
    reference writes `__metadata__` in its hash map's order, which changes from one process
    to the next (ours writes it sorted), so headers are compared as JSON, all else as bytes."""
    files = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            with open(os.path.join(folder, name), "rb") as f:
                data = f.read()
            length = int.from_bytes(data[:8], "little")
            files[name] = (json.loads(data[8:8 + length]), length, data[8 + length:])
    return files


def test_dcp_writes_the_references_bytes_and_each_side_reads_the_other(tmp_path):
    import reference_oracle

    if reference_oracle.load() is None:
        pytest.skip("the reference safetensors 0.8 is not installed")
    ours_dir, ref_dir = tmp_path / "ours", tmp_path / "ref"
    # Each side writes its own checkpoint and reads the other's (the reference side runs
    # second, so that ours exists for it; ours reads the reference's from a first pass).
    first = run_side("reference", ref_dir, ref_dir, tmp_path)
    ours = run_side("ours", ours_dir, ref_dir, tmp_path)
    reference = run_side("reference", tmp_path / "ref2", ours_dir, tmp_path)

    assert "libsafetensors" in ours["module"], ours["module"]
    assert "libsafetensors" not in first["module"] and "libsafetensors" not in reference["module"]
    for result in (first, ours, reference):
        assert all(result["read_back"].values()), result
        assert result["consolidated"], result
    assert safetensors_files(ours_dir) == safetensors_files(ref_dir)
    consolidated = safetensors_files(str(ours_dir) + "-consolidated")
    assert len(consolidated) == 2
    assert consolidated == safetensors_files(str(ref_dir) + "-consolidated")
    with open(ours_dir / "model.safetensors.index.json") as f:
        assert sorted(json.load(f)["weight_map"]) == ["embed.weight", "head.bias",
                                                       "norm.weight", "scale"]
