"""torch 2's dtypes: the 8-bit float casts compared bit for bit with torch's `.to(dtype)` over
all 256 codes (NaN payloads included), through load_checkpoint, load_file(dtype=), numpy's
load_checkpoint and the `safetensors cast` command; and every torch dtype the reference 0.8
stores round-trips through ours, in the same bytes as the reference writes and reads."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import libsafetensors.numpy as st_numpy
from clients_support import worker_env
from libsafetensors import safe_open
from libsafetensors.torch import load_checkpoint, load_file, save_file

if not hasattr(torch, "float8_e4m3fn"):
    pytest.skip(f"torch {torch.__version__} has no float8 dtypes (torch 2.1+ has)",
                allow_module_level=True)

# Our 8-bit sources with a cast, by safetensors name; those this torch lacks are left out.
F8 = {name: getattr(torch, attr) for name, attr in [
    ("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"), ("F8_E8M0", "float8_e8m0fnu"),
    ("F8_E4M3FNUZ", "float8_e4m3fnuz"), ("F8_E5M2FNUZ", "float8_e5m2fnuz")]
    if hasattr(torch, attr)}  # fmt: skip
TARGETS = {torch.float16: ("F16", torch.int16), torch.bfloat16: ("BF16", torch.int16),
           torch.float32: ("F32", torch.int32)}  # fmt: skip
FLOAT4 = getattr(torch, "float4_e2m1fn_x2", None)


def every_code(dtype):
    return torch.arange(256, dtype=torch.int16).to(torch.uint8).view(dtype)


@pytest.fixture(scope="module")
def f8_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("f8") / "f8.safetensors")
    tensors = {name: every_code(dtype) for name, dtype in F8.items()}
    save_file(tensors, path)
    return path, tensors


def cli_path():
    import libsafetensors

    built = os.path.join(os.path.dirname(libsafetensors.__file__), "..", "..", "tools",
                         "safetensors")
    return os.environ.get("SAFETENSORS_CLI", os.path.normpath(built))


def assert_bits_equal(got, expected, what):
    _, bits = TARGETS[expected.dtype]
    assert got.dtype == expected.dtype, what
    got_bits, want_bits = got.view(bits), expected.view(bits)
    differ = (got_bits != want_bits).nonzero().flatten().tolist()
    assert not differ, (f"{what}: codes {differ[:8]} gave {got_bits[differ[:8]].tolist()}, "
                        f"torch {want_bits[differ[:8]].tolist()}")


@pytest.mark.parametrize("target", list(TARGETS), ids=lambda t: TARGETS[t][0])
def test_f8_casts_are_torchs_for_all_256_codes(f8_file, target, tmp_path):
    path, tensors = f8_file
    name, bits = TARGETS[target]
    loads = {"load_checkpoint": load_checkpoint(path, dtype=target),
             "load_file": load_file(path, dtype=target)}
    np_target = {"F16": np.float16, "F32": np.float32, "BF16": "bfloat16"}[name]
    try:
        arrays = st_numpy.load_checkpoint(path, dtype=np_target)
        loads["numpy"] = {k: torch.from_numpy(a.view(np.int16 if a.itemsize == 2 else np.int32))
                          .view(target) for k, a in arrays.items()}
    except Exception as error:  # bfloat16 without ml_dtypes
        assert name == "BF16", error
    if os.access(cli_path(), os.X_OK):
        out = str(tmp_path / "cast.safetensors")
        run = subprocess.run([cli_path(), "cast", path, out, "--dtype", name],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        loads["cli cast"] = load_file(out)
    for how, loaded in loads.items():
        for source, tensor in tensors.items():
            assert_bits_equal(loaded[source], tensor.to(target), f"{source} -> {name} by {how}")


@pytest.mark.skipif(FLOAT4 is None, reason="this torch has no float4_e2m1fn_x2")
def test_f4_is_stored_and_loaded_unchanged(path):
    # F4 has no cast yet (torch 2.13 cannot convert float4_e2m1fn_x2 either): loading with a
    # dtype leaves it as it is, two values per byte, the header's last dimension doubled.
    packed = torch.arange(256, dtype=torch.int16).to(torch.uint8).reshape(16, 16)
    save_file({"f4": packed.view(FLOAT4), "f32": torch.ones(3)}, path)
    with safe_open(path, framework="pt") as f:
        assert f.get_slice("f4").get_dtype() == "F4"
        assert f.get_slice("f4").get_shape() == [16, 32]
    for loaded in (load_file(path), load_checkpoint(path), load_checkpoint(path, torch.float16)):
        assert loaded["f4"].dtype == FLOAT4 and loaded["f4"].shape == (16, 16)
        assert torch.equal(loaded["f4"].view(torch.uint8), packed)
    assert load_checkpoint(path, torch.float16)["f32"].dtype == torch.float16


# In a fresh interpreter with the reference (no alias on the path): its dtype table, the file
# it writes from the same bytes, and what it reads back from ours.
REFERENCE_SCRIPT = r"""
import json, sys, torch
import safetensors, safetensors.torch as st
assert "libsafetensors" not in sys.modules
d = sys.argv[1]
spec = torch.load(d + "/spec.pt")
tensors = {k: raw.view(getattr(torch, dtype)).reshape(shape) for k, (raw, dtype, shape)
           in spec.items()}
st.save_file(tensors, d + "/reference.safetensors", metadata={"format": "pt"})
read = {}
with safetensors.safe_open(d + "/ours.safetensors", framework="pt") as f:
    for k in f.keys():
        t = f.get_tensor(k)
        read[k] = (t.contiguous().view(torch.uint8).reshape(-1).clone(), str(t.dtype)[6:],
                   list(t.shape), f.get_slice(k).get_dtype())
torch.save(read, d + "/read.pt")
json.dump({"sizes": sorted(str(t)[6:] for t in st._SIZE), "file": safetensors.__file__},
          open(d + "/table.json", "w"))
"""


def test_every_reference_dtype_round_trips_in_the_reference_bytes(tmp_path):
    # Every torch dtype name the reference knows how to store (its _SIZE table) and this torch
    # has: found by name, so that the table comes from the reference itself.
    table = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import json, sys
        try:
            import safetensors.torch as st
        except ImportError:
            sys.exit(3)
        json.dump(sorted(str(t)[6:] for t in st._SIZE), open(sys.argv[1], "w"))
        """), str(tmp_path / "names.json")], env=worker_env(str(tmp_path)), capture_output=True,
        text=True)
    if table.returncode == 3:
        pytest.skip("the reference safetensors is not installed here (the test venv has it)")
    assert table.returncode == 0, table.stderr
    names = json.load(open(tmp_path / "names.json"))
    assert len(names) >= 18 and "float8_e8m0fnu" in names and "float4_e2m1fn_x2" in names
    raw = torch.arange(256 * 8, dtype=torch.int64).remainder(251).to(torch.uint8)
    spec, tensors = {}, {}
    for name in names:
        dtype = getattr(torch, name)
        size = torch.empty((), dtype=dtype).element_size()
        data = raw[:24 * size].clone()
        if dtype == torch.bool:
            data = data % 2
        shape = [4, 6]
        spec[name] = (data, name, shape)
        tensors[name] = data.view(dtype).reshape(shape)
    torch.save(spec, tmp_path / "spec.pt")
    ours = str(tmp_path / "ours.safetensors")
    save_file(tensors, ours, metadata={"format": "pt"})
    run = subprocess.run([sys.executable, "-c", REFERENCE_SCRIPT, str(tmp_path)],
                         env=worker_env(str(tmp_path)), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    table = json.load(open(tmp_path / "table.json"))
    assert "libsafetensors" not in table["file"]
    # The same bytes as the reference writes, header and data.
    with open(ours, "rb") as a, open(tmp_path / "reference.safetensors", "rb") as b:
        assert a.read() == b.read()
    # Each reads the other's file to the same bytes, dtype and shape.
    read = torch.load(tmp_path / "read.pt")
    for loaded in (load_file(ours), load_file(str(tmp_path / "reference.safetensors"))):
        assert sorted(loaded) == sorted(read)
        for name, tensor in tensors.items():
            assert loaded[name].dtype == tensor.dtype and loaded[name].shape == tensor.shape
            assert torch.equal(loaded[name].view(torch.uint8), spec[name][0].view(
                tensor.shape[0], -1)), name
            data, dtype, shape, _ = read[name]
            assert (dtype, shape) == (name, list(tensor.shape)), name
            assert torch.equal(data, spec[name][0]), name
