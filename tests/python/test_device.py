"""The device path (src/device/): the same pipeline that loads onto a GPU, run against the
emulated device, delivers the CPU loader's bytes for every dtype, cast, subset and ring shape,
and its checks hold (and fail for a ring broken on purpose). Without CUDA, cuda_status says
why and CUDA loads keep torch's path; with a GPU, load_checkpoint/load_file onto cuda:0 match
the CPU bit for bit.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import libsafetensors  # noqa: E402
import libsafetensors.torch as ours  # noqa: E402
from libsafetensors import _core, _device  # noqa: E402

DTYPES = ["float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8",
          "uint8", "bool", "float8_e4m3fn", "float8_e5m2"]


# Whether this torch narrows NaNs without their payload (torch 1.x), unlike torch 2 and us.
OLD_TORCH_NAN = int(torch.__version__.split(".")[0]) < 2


def random_tensors(seed=0):
    """Random bytes viewed as every dtype this torch has (NaN payloads and all)."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    shapes = [(257, 129), (64, 33), (3, 5, 7), (1000,), (31,), (9, 9), (17,), (16, 16)]
    for i, name in enumerate(DTYPES):
        dtype = getattr(torch, name, None)
        if dtype is None:
            continue
        shape = shapes[i % len(shapes)]
        if name == "bool":
            tensors[f"t.{name}"] = torch.randint(0, 2, shape, generator=g).bool()
            continue
        size = torch.empty((), dtype=dtype).element_size()
        n = int(np.prod(shape))
        raw = torch.randint(0, 256, (n * size,), generator=g, dtype=torch.uint8)
        tensors[f"t.{name}"] = raw.view(dtype).reshape(shape)
    tensors["t.scalar"] = torch.tensor(1.5)
    tensors["t.empty"] = torch.zeros((0, 3), dtype=torch.float16)
    tensors["t.big"] = torch.randn(700, 1031, generator=g)  # ~2.9 MB: many slots
    return tensors


@pytest.fixture(scope="module")
def checkpoint_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("device") / "model.safetensors")
    ours.save_file(random_tensors(), path)
    return path


RINGS = [
    dict(threads=1, slots=2, slot_bytes=64 << 10),
    dict(threads=2),
    dict(threads=3, slots=5, slot_bytes=256 << 10, streams=3, copy_delay_us=100, seed=3),
]


def host_bytes(checkpoint, plan):
    buffer = np.empty(plan.buffer_size, dtype=np.uint8)
    checkpoint.load_into(plan, buffer)
    return buffer.tobytes()


@pytest.mark.parametrize("ring", RINGS, ids=["tight", "default", "slow"])
@pytest.mark.parametrize("dtype", [None, "BF16", "F16", "F32"])
def test_emulated_device_matches_the_host_loader(checkpoint_path, ring, dtype):
    checkpoint = libsafetensors.Checkpoint(checkpoint_path)
    plan = checkpoint.plan(dtype)
    got, checks, stats = checkpoint._load_to_emulated_device(plan, **ring)
    assert got == host_bytes(checkpoint, plan)
    assert checks["ok"], checks["violations"]
    assert checks["pinned_live"] == 0
    assert checks["pinned_high_water"] <= stats["pinned_bytes"] <= 256 << 20
    assert checks["bytes_copied"] == stats["bytes_copied"]
    assert checks["bytes_cast"] == stats["bytes_cast_on_device"]
    # Device casts copy their pieces as stored, and the kernels write the rest.
    assert (stats["bytes_copied"] - stats["bytes_staged_for_device_casts"]
            + stats["bytes_cast_on_device"]) == plan.buffer_size


@pytest.mark.parametrize("cast_on", ["auto", "host", "device"])
@pytest.mark.parametrize("dtype", ["BF16", "F16", "F32"])
def test_cast_placements_give_the_host_loaders_bytes(checkpoint_path, cast_on, dtype):
    """Casts on the (emulated) device run the kernels' element operations; on the host, the CPU
    casts; both give the host loader's bytes."""
    checkpoint = libsafetensors.Checkpoint(checkpoint_path)
    plan = checkpoint.plan(dtype)
    got, checks, stats = checkpoint._load_to_emulated_device(plan, cast_on=cast_on, **RINGS[2])
    assert got == host_bytes(checkpoint, plan)
    assert checks["ok"], checks["violations"]
    if cast_on == "host":
        assert stats["bytes_cast_on_device"] == 0 and stats["device_staging_bytes"] == 0
        assert stats["bytes_cast_on_host"] > 0 and "host" in stats["host_cast_reason"]
    elif cast_on == "auto" and dtype != "F32":
        # The emulated device casts, but "auto" keeps narrowing casts (here F32 sources) on the
        # host, where they shrink the bytes sent; the 8-bit and 16-bit sources go to the device.
        assert stats["bytes_cast_on_device"] > 0 and stats["bytes_cast_on_host"] > 0
        assert "narrowing" in stats["host_cast_reason"]
        assert checks["casts"] == stats["casts"] > 0
    else:  # "device", or "auto" with only widening and same-size casts
        assert stats["bytes_cast_on_device"] > 0 and stats["bytes_cast_on_host"] == 0
        assert stats["device_staging_bytes"] == stats["pinned_bytes"]
        assert checks["casts"] == stats["casts"] > 0


def test_a_device_without_casts_falls_back_or_refuses(checkpoint_path):
    checkpoint = libsafetensors.Checkpoint(checkpoint_path)
    plan = checkpoint.plan("F16")
    got, checks, stats = checkpoint._load_to_emulated_device(plan, threads=2, device_casts=False)
    assert got == host_bytes(checkpoint, plan)
    assert checks["ok"], checks["violations"]
    assert stats["bytes_cast_on_device"] == 0
    assert "without casts" in stats["host_cast_reason"]
    with pytest.raises(libsafetensors.SafetensorError, match="without casts") as error:
        checkpoint._load_to_emulated_device(plan, cast_on="device", device_casts=False)
    assert error.value.code == "device"
    with pytest.raises(ValueError, match="cast_on"):
        checkpoint._load_to_emulated_device(plan, cast_on="gpu")


def test_a_cast_before_its_copy_is_caught(checkpoint_path):
    """The negative test of the casts' order: a kernel queued ahead of its staging copy."""
    checkpoint = libsafetensors.Checkpoint(checkpoint_path)
    plan = checkpoint.plan("F32")
    _, checks, _ = checkpoint._load_to_emulated_device(
        plan, threads=1, slots=2, slot_bytes=64 << 10, cast_on="device", cast_before_copy=True)
    assert not checks["ok"]
    assert any("queued before the copy" in v for v in checks["violations"]), checks["violations"]


@pytest.mark.parametrize("target", [None, torch.bfloat16, torch.float16, torch.float32])
def test_emulated_device_is_bit_identical_to_torch(checkpoint_path, target):
    """Each tensor as the device would hold it equals torch's own `.to(target)` of the file's
    tensor (for the dtypes load_checkpoint converts), bit for bit."""
    source = ours.load_file(checkpoint_path)
    checkpoint = libsafetensors.Checkpoint(checkpoint_path)
    plan = checkpoint.plan(ours._CAST_TARGETS.get(target))
    got, checks, _ = checkpoint._load_to_emulated_device(plan, threads=2, slot_bytes=64 << 10)
    assert checks["ok"], checks["violations"]
    device = torch.frombuffer(bytearray(got), dtype=torch.uint8) if got else torch.empty(0)
    views = ours._plan_views(plan, device)
    castable = {torch.float32, torch.float16, torch.bfloat16}
    castable |= {getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n)}
    for name, tensor in source.items():
        want = tensor.to(target) if target is not None and tensor.dtype in castable else tensor
        have = views[name]
        assert have.dtype == want.dtype and have.shape == want.shape, name
        if OLD_TORCH_NAN and want.is_floating_point() and want.dtype != tensor.dtype:
            # torch 1.x drops NaN payloads when it narrows floats; 2.x keeps their top bits,
            # as we do (an F32 NaN 0xffa00000 becomes F16 0xfe00 in 1.13, 0xff00 in 2.13).
            nan = torch.isnan(want)
            assert torch.equal(torch.isnan(have), nan), name
            have, want = have[~nan], want[~nan]
        assert torch.equal(have.reshape(-1).view(torch.uint8), want.reshape(-1).view(torch.uint8)), name


def test_emulated_device_subsets(checkpoint_path):
    checkpoint = libsafetensors.Checkpoint(checkpoint_path)
    for selection in (dict(names=["t.big", "t.scalar"]), dict(pattern="t.float*")):
        plan = checkpoint.plan("BF16", **selection)
        got, checks, _ = checkpoint._load_to_emulated_device(plan, **RINGS[2])
        assert got == host_bytes(checkpoint, plan)
        assert checks["ok"], checks["violations"]


def test_pinned_memory_is_bounded(checkpoint_path):
    checkpoint = libsafetensors.Checkpoint(checkpoint_path)
    plan = checkpoint.plan()
    got, checks, stats = checkpoint._load_to_emulated_device(
        plan, threads=2, slot_bytes=1 << 20, max_pinned_bytes=128 << 10)
    assert got == host_bytes(checkpoint, plan)
    assert checks["pinned_high_water"] <= 128 << 10
    assert stats["copies"] > plan.buffer_size // (128 << 10)


@pytest.mark.parametrize("keep_pinned", [True, False])
def test_the_pinned_ring_is_kept_unless_asked_not_to(checkpoint_path, keep_pinned):
    """A load keeps its pinned ring for the next one (issue 13); the emulated device of each
    call releases it before its checks (pinned_kept) and reports one allocation."""
    checkpoint = libsafetensors.Checkpoint(checkpoint_path)
    plan = checkpoint.plan()
    got, checks, stats = checkpoint._load_to_emulated_device(plan, **RINGS[0],
                                                             keep_pinned=keep_pinned)
    assert got == host_bytes(checkpoint, plan)
    assert checks["ok"], checks["violations"]
    assert checks["pinned_kept"] == (stats["pinned_bytes"] if keep_pinned else 0)
    assert checks["pinned_allocations"] == 1 and checks["pinned_live"] == 0
    assert stats["pinned_reused"] is False  # a fresh emulated device: nothing kept before
    assert stats["pinned_alloc_seconds"] >= 0


def test_release_cuda_staging_frees_what_was_kept_once():
    # Earlier CUDA loads of this process (with a GPU) may have kept a ring; then nothing is.
    assert libsafetensors.release_cuda_staging() >= 0
    assert libsafetensors.release_cuda_staging() == 0
    assert "release_cuda_staging" in libsafetensors.__all__


def test_a_broken_ring_is_caught(checkpoint_path):
    """The negative test: refilling slots without waiting for their copies is reported."""
    checkpoint = libsafetensors.Checkpoint(checkpoint_path)
    plan = checkpoint.plan()
    _, checks, _ = checkpoint._load_to_emulated_device(
        plan, threads=1, slots=2, slot_bytes=64 << 10, copy_delay_us=2000, skip_slot_wait=True)
    assert not checks["ok"]
    assert any("still queued" in v for v in checks["violations"]), checks["violations"]


@pytest.mark.parametrize("ring", RINGS, ids=["tight", "default", "slow"])
@pytest.mark.parametrize("dtype", [None, "F32", "BF16"])
def test_direct_reads_give_the_host_loaders_bytes(checkpoint_path, ring, dtype):
    """Tensors kept as stored go from the file straight into (emulated) device memory; the
    converting ones still go through the ring; together they are the host loader's bytes."""
    checkpoint = libsafetensors.Checkpoint(checkpoint_path)
    plan = checkpoint.plan(dtype)
    got, checks, stats = checkpoint._load_to_emulated_device(plan, device_direct_reads=True,
                                                             **ring)
    assert got == host_bytes(checkpoint, plan)
    assert checks["ok"], checks["violations"]
    assert checks["bytes_read_direct"] == stats["bytes_read_direct"] > 0
    assert checks["direct_reads"] == stats["direct_reads"] > 0
    assert stats["direct_reason"] == ""
    assert (stats["bytes_copied"] - stats["bytes_staged_for_device_casts"]
            + stats["bytes_cast_on_device"] + stats["bytes_read_direct"]) == plan.buffer_size
    if dtype is None:
        assert stats["bytes_read_direct"] == plan.buffer_size and stats["bytes_copied"] == 0
    else:
        assert stats["bytes_copied"] > 0


def test_direct_reads_fall_back_and_say_why(checkpoint_path):
    checkpoint = libsafetensors.Checkpoint(checkpoint_path)
    plan = checkpoint.plan()
    want = host_bytes(checkpoint, plan)
    # The emulator's default: no direct reads; "auto" goes through the ring and says why.
    got, checks, stats = checkpoint._load_to_emulated_device(plan, threads=2)
    assert got == want and checks["ok"]
    assert stats["bytes_read_direct"] == 0 and "direct reads are off" in stats["direct_reason"]
    got, _, stats = checkpoint._load_to_emulated_device(plan, direct="off",
                                                        device_direct_reads=True)
    assert got == want and stats["bytes_read_direct"] == 0
    assert "DirectReads::off" in stats["direct_reason"]
    # A file the device refuses (as cuFile refuses one on an unsupported file system).
    got, checks, stats = checkpoint._load_to_emulated_device(
        plan, direct="on", device_direct_reads=True, refuse_direct_files=True)
    assert got == want and checks["ok"], checks["violations"]
    assert stats["bytes_read_direct"] == 0 and "refuses" in stats["direct_reason"]
    with pytest.raises(libsafetensors.SafetensorError, match="GPUDirect Storage") as error:
        checkpoint._load_to_emulated_device(plan, direct="on")
    assert error.value.code == "device"
    with pytest.raises(ValueError, match="direct"):
        checkpoint._load_to_emulated_device(plan, direct="yes")


def test_a_direct_read_written_twice_is_caught(checkpoint_path):
    checkpoint = libsafetensors.Checkpoint(checkpoint_path)
    plan = checkpoint.plan()
    _, checks, _ = checkpoint._load_to_emulated_device(plan, device_direct_reads=True,
                                                       direct_read_twice=True)
    assert not checks["ok"]
    assert any("more than once" in v for v in checks["violations"]), checks["violations"]


def test_gds_status_says_why(monkeypatch):
    status = libsafetensors.gds_status()
    assert set(status) >= {"available", "compat_mode", "reason", "library"}
    assert "gds_status" in libsafetensors.__all__
    if status["available"]:
        pytest.skip(f"cuFile is available here: {status['library']}")
    assert "libcufile.so.0" in status["reason"], status["reason"]
    monkeypatch.setenv("SAFETENSORS_CUFILE", "/nonexistent/libcufile.so.5")
    named = libsafetensors.gds_status()
    assert not named["available"]
    assert "/nonexistent/libcufile.so.5" in named["reason"], named["reason"]


@pytest.mark.parametrize("folder", [("cu13",), ("cufile",)])
def test_gds_status_tries_the_cufile_wheel(tmp_path, monkeypatch, folder):
    """NVIDIA's wheels' cuFile (torch installs it; not on the loader's path) is tried before
    the system's names: nvidia/cu13/lib for CUDA 13, nvidia/cufile/lib for CUDA 12."""
    if libsafetensors.gds_status()["available"]:
        pytest.skip("cuFile is available here")
    lib = tmp_path.joinpath("nvidia", *folder, "lib")
    lib.mkdir(parents=True)
    (lib / "libcufile.so.0").write_bytes(b"not a library")
    monkeypatch.syspath_prepend(str(tmp_path))
    status = libsafetensors.gds_status()
    assert not status["available"]
    assert str(lib / "libcufile.so.0") in status["reason"], status["reason"]


@pytest.mark.parametrize("folder", ["cu13", "cu12", "cuda_runtime"])
def test_cuda_runtime_is_looked_for_in_nvidias_wheels(tmp_path, monkeypatch, folder):
    """The CUDA runtime torch's wheels bring: the already mapped copy first, then each wheel
    layout (nvidia/cu13/lib, nvidia/cuda_runtime/lib), newest version first."""
    pytest.importorskip("torch")
    lib = tmp_path / "nvidia" / folder / "lib"
    lib.mkdir(parents=True)
    for name in ("libcudart.so.12", "libcudart.so.13"):
        (lib / name).write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = _device._torch_runtimes()
    ours = [p for p in found if p.startswith(str(lib))]
    assert ours == [str(lib / "libcudart.so.13"), str(lib / "libcudart.so.12")], found
    mapped = _device._mapped_libraries("libcudart")
    assert found[:len(mapped)] == mapped
    # The maps parser finds what is mapped, by file name (the C library always is).
    assert any(os.path.basename(p).startswith("libc.so") for p in _device._mapped_libraries("libc.so"))


def test_load_to_cuda_refuses_a_bad_direct_value(checkpoint_path):
    checkpoint = libsafetensors.Checkpoint(checkpoint_path)
    plan = checkpoint.plan()
    with pytest.raises(ValueError, match="direct"):
        checkpoint.load_to_cuda(plan, FakeCudaArray(plan.buffer_size), 0, direct="maybe")


def test_cuda_status_says_why():
    status = libsafetensors.cuda_status()
    assert set(status) >= {"available", "reason", "library", "device_count"}
    if not status["available"]:
        assert status["reason"]
        assert _device.cuda_unavailable_reason() == status["reason"]


def test_cuda_target():
    assert _device.cuda_target(torch, "cpu") is None
    assert _device.cuda_target(torch, {"": "cuda:0"}) is None
    assert _device.cuda_target(torch, "cuda:1") == torch.device("cuda", 1)
    assert _device.cuda_target(torch, 2) == torch.device("cuda", 2)
    assert _device.cuda_target(torch, torch.device("cuda", 0)) == torch.device("cuda", 0)


def test_forced_fallback(monkeypatch):
    monkeypatch.setenv("SAFETENSORS_DEVICE_LOAD", "torch")
    assert "SAFETENSORS_DEVICE_LOAD" in _device.cuda_unavailable_reason()


def test_load_to_cuda_without_cuda_raises_device_error(checkpoint_path):
    if libsafetensors.cuda_status()["available"]:
        pytest.skip("CUDA is available here")
    checkpoint = libsafetensors.Checkpoint(checkpoint_path)
    plan = checkpoint.plan()
    with pytest.raises(libsafetensors.SafetensorError) as error:
        checkpoint.load_to_cuda(plan, FakeCudaArray(plan.buffer_size), 0)
    assert error.value.code == "device"


class FakeCudaArray:
    """Only the CUDA array interface of a device buffer (never copied into: the checks and
    the missing runtime stop the load first)."""

    def __init__(self, size, typestr="|u1", readonly=False, shape=None, strides=None):
        self.__cuda_array_interface__ = {"data": (0, readonly), "shape": shape or (size,),
                                         "typestr": typestr, "strides": strides, "version": 3}


# A load through the binding with a CUDA runtime, on a machine without a GPU: the stand-in
# runtime (tests/fake_cuda/fake_cudart.cpp, named through SAFETENSORS_FAKE_CUDART by ctest),
# in a fresh interpreter as the runtime is loaded once per process.
FAKE_CUDART = os.environ.get("SAFETENSORS_FAKE_CUDART", "")

_THROUGH_FAKE = """
import ctypes, json, os, sys
import numpy as np
import libsafetensors
path, cast_on, dtype, direct = sys.argv[1:5]
fake = ctypes.CDLL(os.environ["SAFETENSORS_CUDART"])
fake.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
fake.cudaMemcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
fake.fake_cuda_violations.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
fake.fake_cuda_violations.restype = ctypes.c_uint64
checkpoint = libsafetensors.Checkpoint(path)
plan = checkpoint.plan(None if dtype == "-" else dtype)
device = ctypes.c_void_p()
assert fake.cudaMalloc(ctypes.byref(device), plan.buffer_size) == 0

class DeviceBytes:
    __cuda_array_interface__ = {"data": (device.value, False), "shape": (plan.buffer_size,),
                                "typestr": "|u1", "strides": None, "version": 3}

stats = checkpoint.load_to_cuda(plan, DeviceBytes(), 1, threads=2, slot_bytes=64 << 10,
                                cast_on=cast_on, direct=direct)
back = np.empty(plan.buffer_size, dtype=np.uint8)
assert fake.cudaMemcpy(back.ctypes.data, device, plan.buffer_size, 2) == 0
host = np.empty(plan.buffer_size, dtype=np.uint8)
checkpoint.load_into(plan, host)
text = ctypes.create_string_buffer(4096)
violations = fake.fake_cuda_violations(text, 4096)
print(json.dumps({"stats": stats, "same": bool((back == host).all()),
                  "violations": violations, "text": text.value.decode(),
                  "status": libsafetensors.cuda_status()}))
"""


@pytest.mark.skipif(not FAKE_CUDART, reason="SAFETENSORS_FAKE_CUDART is not set (ctest sets it)")
@pytest.mark.parametrize("cast_on,dtype,direct", [("auto", "-", "off"), ("auto", "F32", "off"),
                                                  ("device", "BF16", "off"), ("host", "F16", "off"),
                                                  ("auto", "-", "on")])
def test_load_to_cuda_through_a_cuda_runtime(checkpoint_path, cast_on, dtype, direct):
    """The binding on a real load: the destination from the CUDA array interface, the device
    index, the options by name, every statistic check_gpu.py reads; the stand-in saw no misuse."""
    env = dict(os.environ, SAFETENSORS_CUDART=FAKE_CUDART, SAFETENSORS_CUDA_DRIVER=FAKE_CUDART,
               SAFETENSORS_CUFILE=FAKE_CUDART)
    result = subprocess.run([sys.executable, "-c", _THROUGH_FAKE, checkpoint_path, cast_on,
                             dtype, direct], env=env, capture_output=True, text=True)
    if result.returncode != 0 and cast_on == "device" and "without" in result.stderr:
        # A build without the kernels (no nvcc) refuses casts on the device, saying why.
        assert "nvcc" in result.stderr, result.stderr[-3000:]
        return
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["status"]["available"] and out["status"]["library"] == FAKE_CUDART
    assert out["same"]
    assert out["violations"] == 0, out["text"]
    stats = out["stats"]
    assert set(stats) >= {"bytes_read", "bytes_copied", "copies", "pinned_bytes", "casts",
                          "bytes_cast_on_device", "bytes_cast_on_host", "host_cast_reason",
                          "bytes_read_direct", "direct_reason", "seconds", "slot_wait_seconds",
                          "pinned_reused", "pinned_alloc_seconds"}
    assert stats["pinned_bytes"] <= 256 << 20
    if cast_on == "host" or dtype == "-":
        assert stats["bytes_cast_on_device"] == 0
    if cast_on == "device":
        assert stats["bytes_cast_on_device"] > 0 and stats["bytes_cast_on_host"] == 0
    if direct == "on":
        assert stats["bytes_read_direct"] > 0 and stats["copies"] == 0, stats
    else:
        assert stats["bytes_read_direct"] == 0 and stats["direct_reason"]


def test_load_to_cuda_takes_only_a_writable_byte_array(checkpoint_path):
    """The destination's address and size come from the object, never from bare numbers."""
    checkpoint = libsafetensors.Checkpoint(checkpoint_path)
    plan = checkpoint.plan()
    n = plan.buffer_size
    for bad, why in ((bytearray(n), "no CUDA array interface"),
                     (torch.empty(n, dtype=torch.uint8), "no CUDA array interface"),
                     (FakeCudaArray(n, typestr="<f4"), "not bytes"),
                     (FakeCudaArray(n, shape=(n, 1)), "not one-dimensional"),
                     (FakeCudaArray(n, strides=(2,)), "not contiguous"),
                     (FakeCudaArray(n, readonly=True), "read-only")):
        with pytest.raises(TypeError, match=why):
            checkpoint.load_to_cuda(plan, bad, 0)
    with pytest.raises(TypeError):
        checkpoint.load_to_cuda(plan, 0, n, 0)  # the old (address, size) form is gone


needs_gpu = pytest.mark.skipif(
    not (torch.cuda.is_available() and _device.cuda_unavailable_reason() is None),
    reason="needs a CUDA device the library can use")


@needs_gpu
@pytest.mark.parametrize("target", [None, torch.bfloat16, torch.float16, torch.float32])
def test_load_checkpoint_on_cuda_matches_cpu(checkpoint_path, target):
    cpu = ours.load_checkpoint(checkpoint_path, dtype=target)
    gpu = ours.load_checkpoint(checkpoint_path, dtype=target, device="cuda:0")
    assert list(gpu) == list(cpu)
    for name, tensor in cpu.items():
        assert gpu[name].device == torch.device("cuda", 0)
        assert torch.equal(gpu[name].cpu().reshape(-1).view(torch.uint8),
                           tensor.reshape(-1).view(torch.uint8)), name


@needs_gpu
def test_load_file_on_cuda_keeps_file_order(checkpoint_path):
    cpu = ours.load_file(checkpoint_path)
    gpu = ours.load_file(checkpoint_path, device="cuda:0")
    assert list(gpu) == list(cpu)
    for name, tensor in cpu.items():
        assert torch.equal(gpu[name].cpu().reshape(-1).view(torch.uint8),
                           tensor.reshape(-1).view(torch.uint8)), name


def test_safe_open_on_cuda_goes_through_the_device_path(tmp_path, monkeypatch):
    """safe_open(device=<one CUDA device>) sends get_tensors() and large get_tensor() calls
    through load_checkpoint's device path (here recorded: no GPU), small tensors keep torch's
    copy, and prefetch, numpy and device maps keep their own ways."""
    import libsafetensors._open as opening

    path = str(tmp_path / "m.safetensors")
    big = torch.arange((8 << 20) // 4, dtype=torch.float32)  # exactly the threshold
    ours.save_file({"b.small": torch.ones(3), "a.big": big}, path)
    target = torch.device("cuda", 0)
    monkeypatch.setattr(_device, "cuda_target",
                        lambda torch_module, device: target if device == target else None)
    monkeypatch.setattr(_device, "cuda_unavailable_reason", lambda: None)
    calls = []

    def recording_load(checkpoint, names=None, device=None):
        calls.append((names, device))
        with ours.safe_open(path, framework="pt") as f:  # CPU, not routed
            # reversed file order, to see safe_open put it back
            return {n: f.get_tensor(n) for n in reversed(names or f.offset_keys())}

    monkeypatch.setattr(ours, "load_checkpoint", recording_load)
    with ours.safe_open(path, framework="pt", device="cuda:0") as f:
        assert torch.equal(f.get_tensor("a.big"), big)
        assert calls == [(["a.big"], target)]
        everything = f.get_tensors()
        assert calls[-1] == (None, target)
        assert list(everything) == f.offset_keys()  # file order, not the loader's
        assert opening._CudaLoads.min_bytes == big.numel() * 4
    assert len(calls) == 2
    with ours.safe_open(path, framework="pt", device={"": "cuda:0"}) as f:
        assert f._cuda is None
    with ours.safe_open(path, framework="np") as f:
        assert f._cuda is None
    monkeypatch.setattr(_device, "cuda_unavailable_reason", lambda: "no CUDA runtime")
    with ours.safe_open(path, framework="pt", device="cuda:0") as f:
        assert f._cuda is None
