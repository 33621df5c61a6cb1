#!/usr/bin/env python3
"""GPU checks of the Python package libsafetensors, run by bench/gpu/check.sh.

1. Every CUDA path of the package (load_file, safe_open get_tensor / get_tensors / get_slice,
   prefetch(names), prefetch=True with tensor_stream, load_checkpoint, dtype conversion) gives
   tensors on cuda:0 bit-identical to the reference `safetensors.torch.load_file(path,
   device="cuda:0")` (safetensors 0.8), on random bytes of every dtype this torch has.
2. The reference's CUDA-related behaviour (devices given as str/int/torch.device, slices,
   saving CUDA tensors, models, errors) run once against the real `safetensors` and once against
   ours through the test alias (tests/python/alias), in two subprocesses; outcomes compared.
3. Baseline for issue 13: loading an ~8 GB F16/BF16 checkpoint from warm page cache onto the GPU,
   against a pinned host-to-device copy of the same bytes (the bus limit).

Prints PASS/FAIL lines; exits 1 if any check fails. Nothing is hard-coded: every expected value
comes from the reference or from torch in the same run.
"""

import argparse
import datetime
import gc
import hashlib
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import traceback

RESULTS = []


def report(name, ok, detail=""):
    RESULTS.append((name, bool(ok)))
    print(f"{'PASS' if ok else 'FAIL'}: {name}{' -- ' + detail if detail else ''}", flush=True)


def section(title):
    print(f"\n--- {title}", flush=True)


# ----------------------------------------------------------------------------------------------
# helpers


def random_tensors(torch, seed=0):
    """Random bytes viewed as every dtype the reference and this torch share (NaN payloads and
    all, so that any byte that changes shows); bool holds 0/1 only."""
    g = torch.Generator().manual_seed(seed)

    def bits(dtype, shape):
        size = torch.empty((), dtype=dtype).element_size()
        n = 1
        for d in shape:
            n *= d
        raw = torch.randint(0, 256, (n * size,), generator=g, dtype=torch.uint8)
        return raw.view(dtype).reshape(shape)

    specs = [
        ("float32", (257, 129)), ("float16", (64, 33)), ("bfloat16", (3, 5, 7)),
        ("int64", (1000,)), ("uint8", (4, 4, 4)), ("int8", (31,)), ("int16", (9, 9)),
        ("int32", (5, 6)), ("float64", (17,)), ("float8_e4m3fn", (16, 16)),
        ("float8_e5m2", (8, 3)), ("uint16", (10,)), ("uint32", (10,)), ("uint64", (10,)),
    ]  # fmt: skip
    tensors = {}
    for name, shape in specs:
        dtype = getattr(torch, name, None)
        if dtype is not None:
            tensors[f"t.{name}"] = bits(dtype, shape)
    tensors["t.bool"] = torch.randint(0, 2, (77,), generator=g, dtype=torch.uint8).bool()
    tensors["t.scalar_f32"] = bits(torch.float32, ())
    tensors["t.empty_f16"] = torch.zeros((0, 3), dtype=torch.float16)
    tensors["t.big_bf16"] = bits(torch.bfloat16, (2048, 2053))  # ~8 MB, odd row length
    return tensors


def misaligned_file(path):
    """A valid file whose F32/F16/I64 data start at odd offsets (the format allows it)."""
    import numpy as np

    rng = np.random.default_rng(1)
    parts = [("m.u8", "U8", [3], rng.integers(0, 256, 3, dtype=np.uint8).tobytes()),
             ("m.f32", "F32", [5], rng.integers(0, 256, 20, dtype=np.uint8).tobytes()),
             ("m.f16", "F16", [2, 3], rng.integers(0, 256, 12, dtype=np.uint8).tobytes()),
             ("m.i64", "I64", [4], rng.integers(0, 256, 32, dtype=np.uint8).tobytes())]
    header, offset = {}, 0
    for name, dtype, shape, data in parts:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(p[3] for p in parts))


def raw_bytes(torch, t):
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def compare(torch, got, want, device):
    """'' when `got` is on `device` and bit-identical to `want`, else what differs."""
    if not isinstance(got, torch.Tensor):
        return f"not a tensor: {type(got).__name__}"
    problems = []
    if got.device != device:
        problems.append(f"device {got.device} != {device}")
    if got.dtype != want.dtype:
        problems.append(f"dtype {got.dtype} != {want.dtype}")
    if tuple(got.shape) != tuple(want.shape):
        problems.append(f"shape {tuple(got.shape)} != {tuple(want.shape)}")
    if not problems:
        a, b = raw_bytes(torch, got), raw_bytes(torch, want.to(got.device))
        if not torch.equal(a, b):
            bad = (a != b).nonzero()
            problems.append(f"{bad.numel()} bytes differ, first at byte {bad[0].item()}")
    return "; ".join(problems)


def compare_dicts(torch, got, want, device, order=True):
    problems = []
    if set(got) != set(want):
        problems.append(f"names differ: missing {sorted(set(want) - set(got))}, "
                        f"extra {sorted(set(got) - set(want))}")
    elif order and list(got) != list(want):
        problems.append(f"order differs: {list(got)[:4]}... vs {list(want)[:4]}...")
    for name in want:
        if name in got:
            why = compare(torch, got[name], want[name], device)
            if why:
                problems.append(f"{name}: {why}")
    return problems


def attempt(name, fn):
    """Runs a check body; an exception is a FAIL with its traceback."""
    try:
        problems = fn()
    except Exception as error:  # noqa: BLE001 - every failure is reported
        report(name, False, f"raised {type(error).__name__}: {error}")
        traceback.print_exc(limit=6)
        return
    report(name, not problems, "; ".join(problems[:6]) if problems else "")


# ----------------------------------------------------------------------------------------------
# check 1


def explain_cast(torch, name, source, got, expected, target):
    """Prints which source elements convert differently (bits as hex), NaN or not."""
    def bits(t):
        t = t.detach().cpu().contiguous().reshape(-1)
        wide = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
        return t.view(wide).to(torch.int64) & ((1 << (8 * t.element_size())) - 1)

    src, g, e = bits(source), bits(got), bits(expected)
    differ = (g != e).nonzero().flatten()
    nan = torch.isnan(source.detach().cpu().reshape(-1).to(torch.float32))[differ]
    gpu = bits(source.to("cuda").to(target)) if torch.cuda.is_available() else None
    print(f"  {name} -> {target}: {differ.numel()} of {src.numel()} elements differ, "
          f"{int(nan.sum())} of them NaN in the source; first (source -> ours / torch CPU"
          f"{' / torch GPU' if gpu is not None else ''}):")
    for i in differ[:6].tolist():
        extra = f" / {gpu[i].item():#x}" if gpu is not None else ""
        print(f"    [{i}] {src[i].item():#x} -> {g[i].item():#x} / {e[i].item():#x}{extra}")


def check_correctness(args, torch, workdir):
    import libsafetensors
    import libsafetensors.torch as ours
    import safetensors.torch as ref
    from libsafetensors import safe_open
    from safetensors import safe_open as ref_open

    section("check 1: our CUDA paths against the reference's load_file(device=cuda:0)")
    device = torch.device(args.device)
    path = os.path.join(workdir, "random.safetensors")
    tensors = random_tensors(torch)
    # The reference writes the file; a dtype it refuses is left out (and said so).
    for name in list(tensors):
        try:
            ref.save({name: tensors[name]})
        except Exception as error:  # noqa: BLE001
            print(f"note: the reference cannot save {name} ({tensors[name].dtype}): {error}")
            del tensors[name]
    ref.save_file(tensors, path)
    print(f"file: {len(tensors)} tensors, dtypes "
          f"{sorted({str(t.dtype).split('.')[-1] for t in tensors.values()})}, "
          f"{os.path.getsize(path)} bytes")
    want = ref.load_file(path, device=args.device)
    torch.cuda.synchronize() if device.type == "cuda" else None
    problems = [f"reference {n}: {w}" for n, w in
                ((n, compare(torch, want[n], tensors[n], device)) for n in tensors) if w]
    report("reference load_file(cuda:0) reproduces the written tensors", not problems,
           "; ".join(problems[:4]))
    names = list(want)  # file order

    def cuda_dict(fn):
        def run():
            got = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            return compare_dicts(torch, got, want, device, order=False)
        return run

    for label, kwargs in [
        ('load_file(device="cuda:0")', dict(device=args.device)),
        ('load_file(device="cuda:0", backend="pread")', dict(device=args.device, backend="pread")),
        ("load_file(device=0)", dict(device=device.index or 0) if device.type == "cuda" else None),
        ("load_file(device=torch.device)", dict(device=device)),
        ('load_file(device={"": "cuda:0"})', dict(device={"": args.device})),
    ]:
        if kwargs is None:
            continue
        attempt(f"1 {label}", cuda_dict(lambda kw=kwargs: ours.load_file(path, **kw)))
    # File order, as the reference's dict.
    attempt("1 load_file keeps the reference's (file) order",
            lambda: [] if list(ours.load_file(path, device=args.device)) == names
            else ["order differs"])

    for backend in ("mmap", "pread"):
        def get_each(backend=backend):
            with safe_open(path, framework="pt", device=args.device, backend=backend) as f:
                return {n: f.get_tensor(n) for n in f.keys()}
        attempt(f"1 safe_open(backend={backend}).get_tensor", cuda_dict(get_each))

        def get_all(backend=backend):
            with safe_open(path, framework="pt", device=args.device, backend=backend) as f:
                return f.get_tensors()
        attempt(f"1 safe_open(backend={backend}).get_tensors", cuda_dict(get_all))

    def slices():
        problems = []
        with safe_open(path, framework="pt", device=args.device) as f, \
                ref_open(path, framework="pt", device=args.device) as r:
            for name in names:
                shape = want[name].shape
                keys = [(slice(None),), (Ellipsis,)]
                if len(shape) >= 1 and shape[0] > 2:
                    keys += [(slice(1, None),), (slice(None, None, 2),), (-1,)]
                if len(shape) >= 2 and shape[1] > 3:
                    keys += [(slice(None), slice(1, 3)), (slice(0, 2), slice(None, None, 3))]
                for key in keys:
                    try:
                        expected = r.get_slice(name)[key]
                    except Exception as error:  # noqa: BLE001
                        expected = error
                    try:
                        got = f.get_slice(name)[key]
                    except Exception as error:  # noqa: BLE001
                        got = error
                    if isinstance(expected, Exception) or isinstance(got, Exception):
                        if isinstance(expected, Exception) != isinstance(got, Exception):
                            problems.append(f"{name}{key}: ours {got!r} vs reference "
                                            f"{expected!r}")
                        elif type(expected).__name__ != type(got).__name__:
                            print(f"note: {name}{key}: ours raises {got!r}, the reference "
                                  f"{expected!r}")
                        continue
                    why = compare(torch, got, expected, device)
                    if why:
                        problems.append(f"{name}{key}: {why}")
        return problems
    attempt("1 safe_open.get_slice[...] on cuda:0 == reference get_slice", slices)

    def prefetch_names():
        with safe_open(path, framework="pt", device=args.device) as f:
            asked = list(reversed(names))
            handle = f.prefetch(asked, max_inflight=3)
            pairs = list(handle)
        problems = [] if [n for n, _ in pairs] == asked else ["not in the order asked"]
        if device.type == "cuda":
            torch.cuda.synchronize()
        return problems + compare_dicts(torch, dict(pairs), want, device, order=False)
    attempt("1 safe_open.prefetch(names)", prefetch_names)

    def prefetch_stream():
        with safe_open(path, framework="pt", device=args.device, backend="pread",
                       prefetch=True) as f:
            got = dict(f.tensor_stream())
        return compare_dicts(torch, got, want, device, order=False)
    attempt("1 safe_open(prefetch=True).tensor_stream()", prefetch_stream)

    def prefetch_take():
        with safe_open(path, framework="pt", device=args.device, backend="pread",
                       prefetch=True) as f:
            got = {n: f.get_tensor(n) for n in reversed(names[len(names) // 2:])}
            got.update(f.tensor_stream())
            try:
                f.get_tensor(names[0])
                again = ["asking twice did not raise"]
            except libsafetensors.SafetensorError:
                again = []
        return again + compare_dicts(torch, got, want, device, order=False)
    attempt("1 safe_open(prefetch=True).get_tensor + tensor_stream", prefetch_take)

    attempt('1 load_checkpoint(device="cuda:0")',
            cuda_dict(lambda: ours.load_checkpoint(path, device=args.device)))

    # Issue 13's device path (src/device/): load_file/load_checkpoint onto one CUDA device go
    # through it when the library finds the CUDA runtime; say so, and check it directly.
    from libsafetensors import _device
    status = libsafetensors.cuda_status()
    print(f"library CUDA status: {status}")
    gds = libsafetensors.gds_status()
    print(f"library GDS (cuFile) status: {gds}")
    if not gds["available"] or gds["compat_mode"]:
        print(f"note: GPUDirect Storage is not used by direct='auto' here: {gds['reason']}")
    if device.type == "cuda":
        report("1 the device path finds the CUDA runtime", status["available"],
               status["reason"])

    def device_pipeline(cast_on, direct="off"):
        def run():
            checkpoint = libsafetensors.Checkpoint(path)
            problems = []
            for dtype in (None, "BF16", "F16", "F32"):
                plan = checkpoint.plan(dtype)
                host = torch.empty(plan.buffer_size, dtype=torch.uint8)
                checkpoint.load_into(plan, host.numpy())
                if device.type == "cuda":
                    buffer = torch.empty(plan.buffer_size, dtype=torch.uint8, device=device)
                    stats = checkpoint.load_to_cuda(plan, buffer, device.index or 0,
                                                    slot_bytes=1 << 20, cast_on=cast_on,
                                                    direct=direct)
                    got = buffer.cpu()
                else:  # the dry run: the same pipeline against the emulated device
                    raw, checks, stats = checkpoint._load_to_emulated_device(
                        plan, slot_bytes=1 << 20, cast_on=cast_on, direct=direct,
                        device_direct_reads=direct == "on")
                    got = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else host[:0]
                    if not checks["ok"]:
                        problems.append(f"{dtype}: emulator: {checks['violations'][:3]}")
                if not torch.equal(got, host):
                    # Bit for bit: the first differing byte says which cast went wrong.
                    where = int((got != host).nonzero()[0]) if got.numel() == host.numel() else -1
                    problems.append(f"dtype {dtype}: device bytes differ from the host "
                                    f"loader's (first at byte {where})")
                if dtype is not None and cast_on == "device" and not stats["bytes_cast_on_device"]:
                    problems.append(f"dtype {dtype}: nothing was cast on the device")
                if direct == "on" and not stats["bytes_read_direct"]:
                    problems.append(f"dtype {dtype}: nothing was read directly: "
                                    f"{stats['direct_reason']}")
                print(f"  device pipeline dtype={dtype} cast_on={cast_on}: {stats}")
            return problems
        return run
    # The casts on the host (the CPU casts, in the pinned buffers) and on the GPU (the kernels
    # built in with nvcc, loaded through the driver), each bit for bit against the host loader.
    attempt("1 device pipeline (Checkpoint.load_to_cuda) == host loader, every dtype, "
            "casts on the host", device_pipeline("host"))
    attempt("1 device pipeline (Checkpoint.load_to_cuda) == host loader, every dtype, "
            "casts on the GPU (kernels)", device_pipeline("device"))
    # GPUDirect Storage (cuFile): stored tensors file -> GPU, converting ones through the ring.
    # Compatibility mode included (direct="on" accepts it), so the bytes are checked wherever
    # cuFile loads; without it, the emulated device's direct reads (dry run) or a note.
    if gds["available"] or device.type != "cuda":
        attempt("1 device pipeline direct='on' (GDS) == host loader, every dtype",
                device_pipeline("auto", direct="on"))
    else:
        print(f"note: no direct-read check (GPUDirect Storage unavailable): {gds['reason']}")

    def device_map():
        first = names[0]
        got = ours.load_file(path, device={first: args.device, "": "cpu"})
        problems = compare_dicts(torch, {first: got[first]}, {first: want[first]}, device)
        cpu = {n: t for n, t in got.items() if n != first}
        return problems + compare_dicts(torch, cpu, {n: want[n] for n in cpu},
                                        torch.device("cpu"), order=False)
    attempt("1 load_file(device={name: cuda:0, '': cpu}) splits as asked", device_map)

    cast_from = {torch.float32, torch.float16, torch.bfloat16}
    cast_from |= {getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n)}
    ref_cpu = ref.load_file(path)
    for target in (torch.bfloat16, torch.float16, torch.float32):
        def cast(target=target):
            # As torch's CPU `.to(dtype)` (the library's promise), then moved to the device.
            expected = {n: (t.to(target) if t.dtype in cast_from else t).to(device)
                        for n, t in ref_cpu.items()}
            got = ours.load_file(path, device=args.device, dtype=target)
            problems = compare_dicts(torch, got, expected, device, order=False)
            for n in expected:
                if n in got and ref_cpu[n].dtype in cast_from and compare(
                        torch, got[n], expected[n], device):
                    explain_cast(torch, n, ref_cpu[n], got[n], expected[n], target)
            gpu = {n: want[n].to(target) for n in want if want[n].dtype in cast_from}
            diff = [n for n in gpu if compare(torch, got[n], gpu[n], device)]
            if diff:
                print(f"note: dtype={target}: torch's GPU cast differs from its CPU cast "
                      f"(NaN payloads?) on {diff}")
            return problems
        attempt(f"1 load_file(device=cuda:0, dtype={target})", cast)

    mis = os.path.join(workdir, "misaligned.safetensors")
    misaligned_file(mis)
    try:
        mis_want = ref.load_file(mis, device=args.device)
    except Exception as error:  # noqa: BLE001
        print(f"note: the reference cannot load the misaligned file: {error!r}")
    else:
        for backend in ("mmap", "pread"):
            attempt(f"1 misaligned data offsets, load_file(backend={backend})",
                    lambda b=backend: compare_dicts(
                        torch, ours.load_file(mis, device=args.device, backend=b), mis_want,
                        device))

    # Writing CUDA tensors: the bytes must be those the reference writes.
    def save_cuda():
        on_gpu = {n: t.to(device) for n, t in tensors.items()}
        ours_bytes, ref_bytes = ours.save(on_gpu), ref.save(on_gpu)
        out = os.path.join(workdir, "saved_from_cuda.safetensors")
        ours.save_file(on_gpu, out)
        with open(out, "rb") as f:
            file_bytes = f.read()
        problems = []
        if ours_bytes != ref_bytes:
            problems.append("save(cuda tensors) bytes differ from the reference's")
        if file_bytes != ref_bytes:
            problems.append("save_file(cuda tensors) bytes differ from the reference's save")
        return problems
    attempt("1 save/save_file of cuda tensors == reference bytes", save_cuda)


# ----------------------------------------------------------------------------------------------
# check 2: the probe runs in a subprocess, once per implementation


def probe(device_name):
    """Runs reference-API calls with CUDA; prints one JSON line of outcomes."""
    import torch

    import safetensors
    import safetensors.torch as st

    device = torch.device(device_name)
    workdir = tempfile.mkdtemp(prefix="gpucheck-probe-")
    path = os.path.join(workdir, "p.safetensors")
    g = torch.Generator().manual_seed(7)
    tensors = {
        "a.weight": torch.randn(6, 10, generator=g),
        "a.bias": torch.randn(10, generator=g).half(),
        "b": torch.randn(4, 4, generator=g).bfloat16(),
        "c": torch.arange(12, dtype=torch.int64).reshape(3, 4),
        "d": torch.tensor(True),
        "e": torch.zeros((0, 2), dtype=torch.float32),
    }
    if hasattr(torch, "float8_e4m3fn"):
        tensors["f8"] = torch.randn(4, 4, generator=g).to(torch.float8_e4m3fn)
    st.save_file(tensors, path, metadata={"format": "pt"})

    def summary(value):
        if isinstance(value, torch.Tensor):
            data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
            return [str(value.device), str(value.dtype), list(value.shape),
                    hashlib.sha1(data.tobytes()).hexdigest()[:12]]
        if isinstance(value, dict):
            return [[str(k), summary(v)] for k, v in value.items()]
        if isinstance(value, (list, tuple, set)):
            items = sorted(value, key=str) if isinstance(value, set) else value
            return [summary(v) for v in items]
        if isinstance(value, bytes):
            return "bytes:" + hashlib.sha1(value).hexdigest()[:12]
        return repr(value)

    outcomes = {}

    def case(name, fn):
        try:
            outcomes[name] = ["ok", summary(fn())]
        except Exception as error:  # noqa: BLE001
            outcomes[name] = ["error", type(error).__name__, str(error)[:300]]
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()

    def opened(dev, fn, **kwargs):
        with safetensors.safe_open(path, framework="pt", device=dev, **kwargs) as f:
            return fn(f)

    devices = {"str": device_name, "bare": device.type, "int": device.index or 0,
               "torch.device": device, "torch.device(bare)": torch.device(device.type)}
    for label, dev in devices.items():
        case(f"get_tensor device={label}", lambda d=dev: opened(d, lambda f: f.get_tensor("a.weight")))
    case("get_tensors", lambda: opened(device_name, lambda f: f.get_tensors()))
    case("get_tensor each dtype", lambda: opened(
        device_name, lambda f: {k: f.get_tensor(k) for k in f.keys()}))
    case("get_tensor pread", lambda: opened(
        device_name, lambda f: {k: f.get_tensor(k) for k in f.keys()}, backend="pread"))
    case("keys/metadata/offset_keys", lambda: opened(
        device_name, lambda f: [f.keys(), f.metadata(), f.offset_keys()]))
    case("get_slice [1:5, ::3]", lambda: opened(device_name, lambda f: f.get_slice("a.weight")[1:5, ::3]))
    case("get_slice [-1]", lambda: opened(device_name, lambda f: f.get_slice("c")[-1]))
    case("get_slice [...]", lambda: opened(device_name, lambda f: f.get_slice("d")[...]))
    case("get_slice shape/dtype", lambda: opened(
        device_name, lambda f: [f.get_slice("b").get_shape(), f.get_slice("b").get_dtype()]))
    case("get_slice out of bounds", lambda: opened(device_name, lambda f: f.get_slice("c")[:, 5:9]))
    case("load_file cuda:0", lambda: st.load_file(path, device=device_name))
    case("load_file int", lambda: st.load_file(path, device=device.index or 0))
    case("load_file pread", lambda: st.load_file(path, device=device_name, backend="pread"))
    case("load_file bad index cuda:7", lambda: st.load_file(path, device=f"{device.type}:7"))
    case("load_file bad device", lambda: st.load_file(path, device="cudax:0"))
    case("safe_open np on cuda", lambda: safetensors.safe_open(
        path, framework="np", device=device_name).get_tensor("c"))
    on_gpu = {k: v.to(device) for k, v in tensors.items()}
    case("save(cuda tensors)", lambda: st.save(on_gpu, metadata={"format": "pt"}))

    def save_file_cuda():
        out = os.path.join(workdir, "from_cuda.safetensors")
        st.save_file(on_gpu, out, metadata={"format": "pt"})
        with open(out, "rb") as f:
            return f.read()
    case("save_file(cuda tensors)", save_file_cuda)
    case("save non-contiguous cuda", lambda: st.save({"x": on_gpu["a.weight"].t()}))
    shared = torch.randn(4, 4, device=device)
    case("save shared cuda", lambda: st.save({"x": shared, "y": shared}))
    case("_find_shared_tensors cuda", lambda: st._find_shared_tensors(
        {"x": shared, "y": shared, "z": shared[1:], "w": torch.zeros(2, device=device)}))
    case("storage_ptr cuda == data_ptr", lambda: st.storage_ptr(shared) == shared.data_ptr())

    def model_roundtrip():
        torch.manual_seed(3)
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)).to(device)
        model[1].weight = model[0].weight  # tied
        out = os.path.join(workdir, "model.safetensors")
        st.save_model(model, out)
        torch.manual_seed(4)
        other = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)).to(device)
        other[1].weight = other[0].weight
        result = st.load_model(other, out, device=device_name)
        with safetensors.safe_open(out, framework="pt") as f:
            meta = f.metadata()
        return [sorted(result[0]), sorted(result[1]), meta, other.state_dict()]
    case("save_model/load_model tied on cuda", model_roundtrip)
    # The reference's load(bytes) returns its dict in no fixed order: compare sorted.
    case("load(bytes) then to cuda", lambda: {k: v.to(device) for k, v in
                                              sorted(st.load(st.save(tensors)).items())})
    case("get_slice of a scalar [:]", lambda: opened(device_name, lambda f: f.get_slice("d")[:]))
    print("PROBE-JSON " + json.dumps(outcomes), flush=True)


def run_probe(alias_dir, device_name, use_alias):
    env = dict(os.environ)
    if use_alias:
        env["PYTHONPATH"] = os.pathsep.join(p for p in [alias_dir, env.get("PYTHONPATH")] if p)
    which = ("import safetensors, sys; "
             "print('PROBE-WHO', safetensors.__name__, getattr(safetensors, '__file__', ''), "
             "safetensors.safe_open.__module__)")
    who = subprocess.run([sys.executable, "-c", which], env=env, capture_output=True, text=True)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--probe", device_name],
                         env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in out.stdout.splitlines() if line.startswith("PROBE-JSON ")]
    if out.returncode != 0 or not lines:
        print(out.stdout[-3000:], out.stderr[-3000:])
        raise RuntimeError(f"probe ({'alias' if use_alias else 'reference'}) exited "
                           f"{out.returncode}")
    return who.stdout.strip(), json.loads(lines[-1][len("PROBE-JSON "):])


def check_alias(args):
    section("check 2: the reference's CUDA behaviour, reference vs ours through the alias")
    if not os.path.isdir(os.path.join(args.alias_dir, "safetensors")):
        report("2 alias present", False, f"no alias package in {args.alias_dir}")
        return
    try:
        who_ref, ref_out = run_probe(args.alias_dir, args.device, use_alias=False)
        who_ours, ours_out = run_probe(args.alias_dir, args.device, use_alias=True)
    except Exception as error:  # noqa: BLE001
        report("2 probes ran", False, f"{type(error).__name__}: {error}")
        return
    print(f"reference: {who_ref}\nalias:     {who_ours}")
    report("2 the alias resolves to libsafetensors",
           "libsafetensors" in who_ours and "libsafetensors" not in who_ref, who_ours)
    # Ours documents `device` as str, int, torch.device or dict; the reference 0.8 refuses a
    # torch.device. Accepting it is an extension: ours must then give what device=str gives.
    extensions = {"get_tensor device=torch.device", "get_tensor device=torch.device(bare)"}
    for name, want in ref_out.items():
        got = ours_out.get(name)
        if name in extensions and want[0] == "error" and got is not None and got[0] == "ok":
            same = got == ours_out.get("get_tensor device=str")
            report(f"2 {name} (extension: the reference raises {want[1]})", same,
                   "" if same else f"ours {json.dumps(got)[:300]} differs from device=str")
            continue
        if got is None:
            report(f"2 {name}", False, "case missing from our run")
        elif want[0] == "ok":
            report(f"2 {name}", got == want,
                   "" if got == want else f"ours {json.dumps(got)[:400]} vs reference "
                                          f"{json.dumps(want)[:400]}")
        else:
            same_type = got[0] == "error" and got[1] == want[1]
            detail = f"reference raises {want[1]}: {want[2][:150]!r}"
            if got[0] != "error":
                detail += f"; ours returned {json.dumps(got[1])[:200]}"
            elif not same_type:
                detail += f"; ours raises {got[1]}: {got[2][:150]!r}"
            elif got[2] != want[2]:
                detail += f"; ours (same type): {got[2][:150]!r}"
            report(f"2 {name} (error)", same_type, detail)


# ----------------------------------------------------------------------------------------------
# check 3: the baseline of issue 13


def make_checkpoint(torch, path, target_bytes, device):
    """An LLM-shaped checkpoint of about `target_bytes`: random BF16/F16 weights made on the GPU,
    written straight to `path` (header, then the tensors in order)."""
    hidden, inter, vocab = 4096, 14336, 32000
    layout = [("model.embed_tokens.weight", "F16", [vocab, hidden])]
    layer = 0
    total = vocab * hidden * 2
    while total < target_bytes:
        p = f"model.layers.{layer}."
        for name, dtype, shape in [("input_layernorm.weight", "BF16", [hidden]),
                                   ("self_attn.q_proj.weight", "BF16", [hidden, hidden]),
                                   ("self_attn.o_proj.weight", "BF16", [hidden, hidden]),
                                   ("mlp.gate_proj.weight", "BF16", [inter, hidden]),
                                   ("mlp.down_proj.weight", "F16", [hidden, inter])]:
            layout.append((p + name, dtype, shape))
            n = 1
            for d in shape:
                n *= d
            total += 2 * n
        layer += 1
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, dtype, shape in layout:
        n = 2
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    gen = torch.Generator(device=torch.device(device)).manual_seed(0)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name, dtype, shape in layout:
            t = torch.randn(shape, generator=gen, device=device,
                            dtype=torch.bfloat16 if dtype == "BF16" else torch.float16)
            f.write(t.view(torch.uint8).reshape(-1).cpu().numpy().data)
    return len(layout), offset


def check_bench(args, torch, workdir):
    import libsafetensors
    import libsafetensors.torch as ours
    import safetensors.torch as ref
    from libsafetensors import safe_open

    section("check 3: issue 13 baseline, ~8 GB F16/BF16 checkpoint, warm page cache -> cuda:0")
    cuda = torch.device(args.device).type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()
    shm = "/dev/shm"
    try:
        st = os.statvfs(shm)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = 0
    where = shm if free > 3 * args.bench_gb * 1e9 else workdir
    path = os.path.join(where, "gpucheck-bench.safetensors")
    bench_dir = where
    t = time.perf_counter()
    count, nbytes = make_checkpoint(torch, path, int(args.bench_gb * 1e9), args.device)
    made = time.perf_counter() - t
    os.sync() if where != shm else None
    with open(path, "rb") as f:  # warm the page cache (a no-op on tmpfs)
        while f.read(1 << 26):
            pass
    print(f"checkpoint: {path} ({'tmpfs' if where == shm else 'disk, page cache warmed'}), "
          f"{count} tensors, {nbytes / 1e9:.2f} GB of data, made in {made:.1f} s")
    gb = nbytes / 1e9
    device = torch.device(args.device)

    pinned = torch.empty(nbytes, dtype=torch.uint8, pin_memory=cuda)  # pageable in a dry run
    pinned.fill_(1)
    pageable = torch.ones(nbytes, dtype=torch.uint8)

    def pinned_copy():
        out = pinned.to(device, non_blocking=True)
        sync()
        return out

    def pageable_copy():
        out = pageable.to(device)
        sync()
        return out

    def ref_load():
        return ref.load_file(path, device=args.device)

    def ours_load():
        return ours.load_file(path, device=args.device)

    def ours_load_pread():
        return ours.load_file(path, device=args.device, backend="pread")

    def ours_prefetch_stream():
        with safe_open(path, framework="pt", device=args.device, backend="pread",
                       prefetch=True) as f:
            return dict(f.tensor_stream())

    def ours_prefetch_names():
        with safe_open(path, framework="pt", device=args.device) as f:
            return dict(f.prefetch(f.offset_keys(), max_inflight=4))

    def ours_open_get_tensors():
        with safe_open(path, framework="pt", device=args.device) as f:
            return f.get_tensors()

    def ours_open_get_tensor():
        with safe_open(path, framework="pt", device=args.device) as f:
            return {name: f.get_tensor(name) for name in f.offset_keys()}

    def ours_checkpoint():
        return ours.load_checkpoint(path, device=args.device)

    pipeline_stats = []

    def ours_pipeline():
        # The device pipeline called directly, to keep its statistics (pinned memory, waits).
        import libsafetensors
        checkpoint = libsafetensors.Checkpoint(path)
        plan = checkpoint.plan()
        if not cuda:
            raw, checks, stats = checkpoint._load_to_emulated_device(plan)
            pipeline_stats.append(dict(stats, pinned_high_water=checks["pinned_high_water"]))
            return None
        if not pipeline_stats:
            # The first rep pins its ring anew (other rows' loads kept one): it shows the cost
            # of pinning, and later reps the pinned ring reused (issue 13).
            libsafetensors.release_cuda_staging()
        buffer = torch.empty(plan.buffer_size, dtype=torch.uint8, device=device)
        # The ring alone (direct="off"): row (g) measures GPUDirect Storage.
        pipeline_stats.append(checkpoint.load_to_cuda(plan, buffer, device.index or 0,
                                                      direct="off"))
        return ours._plan_views(plan, buffer)

    direct_stats = []
    gds_usable = cuda and libsafetensors.gds_status()["available"]

    def ours_direct():
        # GPUDirect Storage through cuFile: every tensor here is loaded as stored, so all of
        # it goes file -> GPU (in compatibility mode, through cuFile's own host path).
        checkpoint = libsafetensors.Checkpoint(path)
        plan = checkpoint.plan()
        buffer = torch.empty(plan.buffer_size, dtype=torch.uint8, device=device)
        direct_stats.append(checkpoint.load_to_cuda(plan, buffer, device.index or 0,
                                                    direct="on"))
        return ours._plan_views(plan, buffer)

    def ours_checkpoint_f16():
        return ours.load_checkpoint(path, device=args.device, dtype=torch.float16)

    torch_path = path + ".pt"
    import inspect
    try:
        if "mmap" not in inspect.signature(torch.load).parameters:
            raise RuntimeError(f"torch {torch.__version__}'s torch.load has no mmap")
        torch.save(ref.load_file(path), torch_path)
    except Exception as error:  # noqa: BLE001
        print(f"note: no torch.save copy for torch.load: {error}")
        torch_path = None

    def torch_load_mmap():
        return torch.load(torch_path, map_location=args.device, mmap=True, weights_only=True)

    def host_pread():
        return ours.load_file(path, backend="pread")

    def host_checkpoint():
        return ours.load_checkpoint(path)

    methods = [
        ("(a) pinned host->device copy (bus limit)", pinned_copy),
        ("(a2) pageable host->device copy", pageable_copy),
        ("(b) reference load_file(cuda:0)", ref_load),
        ("(c) ours load_file(cuda:0)", ours_load),
        ("(c2) ours load_file(cuda:0, backend=pread)", ours_load_pread),
        ("(d) ours safe_open(prefetch=True, pread).tensor_stream", ours_prefetch_stream),
        ("(d2) ours safe_open.prefetch(names, max_inflight=4)", ours_prefetch_names),
        ("(d3) ours safe_open(device=cuda:0).get_tensors()", ours_open_get_tensors),
        ("(d4) ours safe_open(device=cuda:0).get_tensor(each)", ours_open_get_tensor),
        ("(e) ours load_checkpoint(cuda:0)", ours_checkpoint),
        ("(f) ours device pipeline (Checkpoint.load_to_cuda)", ours_pipeline),
        ("(g) ours load_to_cuda direct=on (GPUDirect Storage)",
         ours_direct if gds_usable else None),
        ("(f2) ours load_checkpoint(cuda:0, dtype=float16)", ours_checkpoint_f16),
        ("(t) torch.load(map_location=cuda:0, mmap=True)", torch_load_mmap if torch_path else None),
        ("(h1) [host only] ours load_file(cpu, backend=pread)", host_pread),
        ("(h2) [host only] ours load_checkpoint(cpu)", host_checkpoint),
    ]
    if not gds_usable:
        print("note: no row (g), GPUDirect Storage unavailable: "
              + (libsafetensors.gds_status()["reason"] if cuda else "no CUDA device"))
    methods = [(label, fn) for label, fn in methods if fn is not None]
    times = {label: [] for label, _ in methods}
    deadline = time.perf_counter() + args.bench_budget_s
    reps_done = 0
    for rep in range(args.reps):
        if rep and time.perf_counter() > deadline:
            print(f"note: stopping after {rep} reps (time budget)")
            break
        for label, fn in methods:
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()  # each load starts as in a fresh process: no cached blocks
            sync()
            t = time.perf_counter()
            try:
                result = fn()
                sync()
                elapsed = time.perf_counter() - t
            except Exception as error:  # noqa: BLE001
                report(f"3 {label} ran", False, f"{type(error).__name__}: {error}")
                times[label].append(float("nan"))
                continue
            if isinstance(result, dict):
                size = sum(v.numel() * v.element_size() for v in result.values())
                where = torch.device("cpu") if "[host only]" in label else device
                on_dev = all(v.device == where for v in result.values())
                if size != nbytes or not on_dev or len(result) != count:
                    report(f"3 {label} loaded everything onto {device}", False,
                           f"{len(result)} tensors, {size} bytes, all on device: {on_dev}")
            times[label].append(elapsed)
            print(f"  rep {rep + 1} {label}: {elapsed:.3f} s = {gb / elapsed:.2f} GB/s", flush=True)
            del result
        reps_done = rep + 1

    # Spot check the bench file once: ours vs reference, bit for bit, on the GPU.
    a, b = ours.load_file(path, device=args.device), ref.load_file(path, device=args.device)
    diff = [n for n in b if compare(torch, a[n], b[n], device)]
    report("3 8 GB checkpoint: ours == reference on cuda:0", not diff, f"differ: {diff[:5]}")
    del a, b, pinned, pageable
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()

    bus = min(times[methods[0][0]])
    print(f"\nresults over {reps_done} alternating reps ({gb:.2f} GB; best and median time; "
          "GB/s of the best; ratio = bus time / time):")
    print(f"  {'method':58s} {'best s':>7s} {'median s':>8s} {'GB/s':>7s} {'vs (a)':>7s}")
    for label, _ in methods:
        ts = [x for x in times[label] if x == x]
        if not ts:
            print(f"  {label:58s} failed")
            continue
        best, median = min(ts), statistics.median(ts)
        print(f"  {label:58s} {best:7.3f} {median:8.3f} {gb / best:7.2f} {bus / best:7.3f}")
    ref_best = min(x for x in times[methods[2][0]] if x == x) if times[methods[2][0]] else None
    if ref_best:
        print("  speed-up vs the reference (b), best times: " + ", ".join(
            f"{label.split()[0]} {ref_best / min(ts):.2f}x" for label, _ in methods[3:]
            if (ts := [x for x in times[label] if x == x])))
    if pipeline_stats:
        best = min(pipeline_stats, key=lambda st: st["seconds"])
        print(f"  device pipeline, fastest run: {best}")
        print("  device pipeline pinned ring per rep (reused, seconds pinning it, load seconds): "
              + ", ".join(f"{st.get('pinned_reused')} {st.get('pinned_alloc_seconds', 0):.4f} "
                          f"{st['seconds']:.3f}" for st in pipeline_stats))
        if direct_stats:
            fastest = min(direct_stats, key=lambda st: st["seconds"])
            print(f"  GPUDirect Storage (g), fastest run: {fastest}")
        pinned_most = max(st.get("pinned_high_water", st["pinned_bytes"]) for st in pipeline_stats)
        report("3 device pipeline pinned host memory <= 512 MB", pinned_most <= 512 << 20,
               f"{pinned_most / 2**20:.0f} MiB")
    for leftover in (path, torch_path):
        try:
            if leftover:
                os.remove(leftover)
        except OSError:
            pass
    check_cast_cost(args, torch, bench_dir)


def check_cast_cost(args, torch, where):
    """Issue 13: F32 -> BF16 on the way to the device costs at most ~10% more than loading the
    F32 file as stored (half the bus bytes, one cast on the host)."""
    import libsafetensors.torch as ours
    import safetensors.torch as ref

    section("check 3b: an F32 checkpoint onto cuda:0, as stored and converted to BF16")
    cuda = torch.device(args.device).type == "cuda"
    path = os.path.join(where, "gpucheck-f32.safetensors")
    gen = torch.Generator(device=torch.device(args.device)).manual_seed(1)
    per = 4096 * 4096
    count = max(1, int(args.bench_gb / 2 * 1e9) // (per * 4))
    ref.save_file({f"w.{i}": torch.randn(4096, 4096, generator=gen, device=args.device).cpu()
                   for i in range(count)}, path)
    gb = count * per * 4 / 1e9
    import libsafetensors

    def pipeline(cast_on):
        """The device pipeline itself with the casts placed as asked; returns its stats."""
        def run():
            checkpoint = libsafetensors.Checkpoint(path)
            plan = checkpoint.plan("BF16")
            if not cuda:
                _, _, stats = checkpoint._load_to_emulated_device(plan, cast_on=cast_on)
                return stats
            buffer = torch.empty(plan.buffer_size, dtype=torch.uint8, device=args.device)
            stats = checkpoint.load_to_cuda(plan, buffer, torch.device(args.device).index or 0,
                                            cast_on=cast_on)
            run.buffer, run.plan = buffer, plan
            return stats
        return run

    host_cast, device_cast = pipeline("host"), pipeline("device")
    rows = [("F32 as stored", lambda: ours.load_checkpoint(path, device=args.device)),
            ("F32 -> BF16", lambda: ours.load_checkpoint(path, device=args.device,
                                                        dtype=torch.bfloat16)),
            ("F32 -> BF16, pipeline, casts on the host", host_cast),
            ("F32 -> BF16, pipeline, casts on the GPU", device_cast),
            ("reference load_file + .to(bf16)",
             lambda: {n: t.to(torch.bfloat16) for n, t in
                      ref.load_file(path, device=args.device).items()})]
    # Where the GPU cannot cast (no kernels built in, or the driver refused them) that row
    # goes, with the reason.
    try:
        print(f"  casts on the GPU: {device_cast()}")
    except Exception as error:  # noqa: BLE001
        report("3b the device cast kernels run on this GPU", False, f"{error}")
        rows = [row for row in rows if row[1] is not device_cast]
    times = {label: [] for label, _ in rows}
    for _ in range(args.reps):
        for label, fn in rows:
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.synchronize()
            t = time.perf_counter()
            result = fn()
            if cuda:
                torch.cuda.synchronize()
            times[label].append(time.perf_counter() - t)
            del result
    for label, _ in rows:
        best = min(times[label])
        print(f"  {label:40s} best {best:.3f} s = {gb / best:.2f} GB/s of F32 file bytes")
    ratio = min(times["F32 -> BF16"]) / min(times["F32 as stored"])
    print(f"  F32 -> BF16 costs {100 * (ratio - 1):+.1f}% vs as stored (target: at most +10%)")
    # Correctness of the cast: bit-identical to torch's CPU .to(bfloat16).
    got = ours.load_checkpoint(path, device=args.device, dtype=torch.bfloat16)
    want = {n: t.to(torch.bfloat16) for n, t in ref.load_file(path).items()}
    diff = [n for n in want if not torch.equal(got[n].cpu().view(torch.int16),
                                               want[n].view(torch.int16))]
    report("3b F32 -> BF16 on the way == torch's .to(bfloat16)", not diff, f"differ: {diff[:4]}")
    # Both placements of the pipeline's cast, bit for bit the same as torch's CPU .to().
    if cuda:
        for label, fn in (("host", host_cast), ("GPU", device_cast)):
            if not any(row[1] is fn for row in rows):
                continue
            stats = fn()
            views = ours._plan_views(fn.plan, fn.buffer)
            diff = [n for n in want if not torch.equal(views[n].cpu().view(torch.int16),
                                                       want[n].view(torch.int16))]
            report(f"3b pipeline F32 -> BF16 with casts on the {label} == torch's .to(bfloat16)",
                   not diff, f"differ: {diff[:4]}; stats {stats}")
            del views
            fn.buffer = None
    os.remove(path)


# ----------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", metavar="DEVICE", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--alias-dir", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "python", "alias"))
    parser.add_argument("--skip-bench", action="store_true")
    parser.add_argument("--bench-gb", type=float, default=8.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--bench-budget-s", type=float, default=150.0,
                        help="no new rep starts after this many seconds of timing")
    args = parser.parse_args()
    if args.probe:
        probe(args.probe)
        return 0

    import numpy
    import torch

    import libsafetensors
    import safetensors

    print(f"date (UTC): {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S}")
    print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA "
          f"{torch.version.cuda}), numpy {numpy.__version__}, reference safetensors "
          f"{safetensors.__version__}, libsafetensors {libsafetensors.__version__} "
          f"({os.path.dirname(libsafetensors.__file__)})")
    try:
        print(subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip())
    except OSError as error:
        print(f"nvidia-smi: {error}")
    if torch.device(args.device).type == "cuda":
        if not torch.cuda.is_available():
            report("torch sees a CUDA device", False, "torch.cuda.is_available() is False")
            return 1
        print(f"torch device: {torch.cuda.get_device_name(0)}, "
              f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
    else:
        # A dry run without a GPU: let prefetch=True load onto the CPU.
        import libsafetensors._prefetch as prefetch_module

        prefetch_module._PREFETCH_DEVICE_TYPES = ("cuda", torch.device(args.device).type)

    workdir = tempfile.mkdtemp(prefix="gpucheck-")
    start = time.perf_counter()
    for step in (lambda: check_correctness(args, torch, workdir), lambda: check_alias(args),
                 None if args.skip_bench else lambda: check_bench(args, torch, workdir)):
        if step is None:
            continue
        try:
            step()
        except Exception as error:  # noqa: BLE001
            report("check ran to its end", False, f"{type(error).__name__}: {error}")
            traceback.print_exc()
        print(f"(elapsed {time.perf_counter() - start:.1f} s)", flush=True)

    failed = [name for name, ok in RESULTS if not ok]
    print(f"\nSUMMARY: {len(RESULTS) - len(failed)} passed, {len(failed)} failed")
    for name in failed:
        print(f"  FAILED: {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
