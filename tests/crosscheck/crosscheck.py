#!/usr/bin/env python3
"""Independent check of libsafetensors' writer with json, struct and numpy.

Usage: crosscheck.py PACK_RAW SCRATCH_DIR

For several cases this generates arrays of every dtype, writes them as raw files, runs
pack_raw (which calls safetensors::write_file), then
  1. decodes the output itself (8-byte length, JSON header, numpy.frombuffer) and compares
     every tensor bit-exactly with what was generated, and
  2. re-implements the writing rules of FORMAT.md (dtype order, compact JSON with the
     reference's escaping, space padding) and requires the file to match byte for byte.
Exits non-zero on the first mismatch. subprocess/os/sys only run the tool and manage files.
"""
import json
import os
import struct
import subprocess
import sys

import numpy as np

# FORMAT.md "Writing": the order tensors are laid out in, first to last.
WRITE_ORDER = [
    "U64", "I64", "F64", "C64", "F32", "U32", "I32", "BF16", "F16", "U16", "I16",
    "F8_E5M2FNUZ", "F8_E4M3FNUZ", "F8_E8M0", "F8_E4M3", "F8_E5M2", "I8", "U8",
    "F6_E3M2", "F6_E2M3", "F4", "BOOL",
]
BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
NUMPY = {
    "BOOL": "?", "U8": "u1", "I8": "i1", "I16": "<i2", "U16": "<u2", "F16": "<f2",
    "I32": "<i4", "U32": "<u4", "F32": "<f4", "I64": "<i8", "U64": "<u8", "F64": "<f8",
    "C64": "<c8",
}
assert sorted(WRITE_ORDER) == sorted(BITS)

rng = np.random.default_rng(20240611)
checks = 0


def fail(message):
    print("crosscheck: MISMATCH: " + message)
    sys.exit(1)


def num_elements(shape):
    count = 1
    for d in shape:
        count *= d
    return count


def make_tensor(dtype, shape):
    """Returns (raw bytes, numpy array or None) for a tensor of `dtype` and `shape`."""
    n = num_elements(shape)
    if dtype == "BOOL":
        array = rng.integers(0, 2, size=shape).astype("?")
    elif dtype in NUMPY:
        # Random bit patterns: NaNs, infinities and subnormals included for floats.
        raw = rng.integers(0, 256, size=n * BITS[dtype] // 8, dtype=np.uint8).tobytes()
        array = np.frombuffer(raw, dtype=NUMPY[dtype]).reshape(shape)
    elif dtype == "BF16":
        values = rng.standard_normal(size=shape).astype("<f4")
        return (values.view("<u4") >> 16).astype("<u2").tobytes(), values
    else:
        bits = n * BITS[dtype]
        assert bits % 8 == 0, (dtype, shape)
        return rng.integers(0, 256, size=bits // 8, dtype=np.uint8).tobytes(), None
    return array.tobytes(), array


def expected_file(tensors, metadata, alignment):
    """FORMAT.md "Writing", independently: returns the bytes the file must have."""
    order = sorted(tensors, key=lambda t: (WRITE_ORDER.index(t["dtype"]), t["name"].encode()))
    header = {}
    if metadata is not None:
        header["__metadata__"] = {k: metadata[k] for k in sorted(metadata, key=str.encode)}
    offset = 0
    for t in order:
        size = len(t["raw"])
        header[t["name"]] = {"dtype": t["dtype"], "shape": list(t["shape"]),
                             "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-(8 + len(text)) % alignment)
    return struct.pack("<Q", len(text)) + text + b"".join(t["raw"] for t in order)


def decode_and_compare(path, tensors, metadata, alignment):
    """Reads our file with json + numpy alone and compares every value bit-exactly."""
    global checks
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    if (8 + n) % alignment:
        fail(f"{path}: 8 + N = {8 + n} is not a multiple of {alignment}")
    text = data[8:8 + n]
    if not text.rstrip(b" ").endswith(b"}"):
        fail(f"{path}: the header is not a JSON object padded with spaces only")

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            fail(f"{path}: duplicate keys in {keys}")
        return dict(pairs)

    header = json.loads(text.decode("utf-8"), object_pairs_hook=no_duplicates)
    if header.pop("__metadata__", None) != metadata:
        fail(f"{path}: metadata differs")
    buffer = data[8 + n:]
    if sorted(header) != sorted(t["name"] for t in tensors):
        fail(f"{path}: names {sorted(header)!r}")
    end_of_data = 0
    for t in tensors:
        entry = header[t["name"]]
        if entry["dtype"] != t["dtype"] or entry["shape"] != list(t["shape"]):
            fail(f"{path}: {t['name']!r}: entry {entry}")
        begin, end = entry["data_offsets"]
        end_of_data = max(end_of_data, end)
        chunk = buffer[begin:end]
        if t["dtype"] in NUMPY:
            got = np.frombuffer(chunk, dtype=NUMPY[t["dtype"]]).reshape(t["shape"])
            want = t["array"]
            same = got.shape == want.shape and got.tobytes() == want.tobytes()
            if same and t["dtype"] not in ("F16", "F32", "F64", "C64"):
                same = bool(np.array_equal(got, want))
        elif t["dtype"] == "BF16":
            got = (np.frombuffer(chunk, dtype="<u2").astype("<u4") << 16).view("<f4")
            want = (t["array"].reshape(-1).view("<u4") & np.uint32(0xFFFF0000)).view("<f4")
            same = got.tobytes() == want.tobytes()
        else:
            same = chunk == t["raw"]
        if not same:
            fail(f"{path}: values of {t['name']!r} ({t['dtype']}) differ")
        checks += 1
    if end_of_data != len(buffer):
        fail(f"{path}: data buffer is {len(buffer)} bytes, tensors end at {end_of_data}")


def run_case(label, pack_raw, scratch, specs, metadata=None, alignment=8, empty_metadata=False):
    global checks
    prefix = os.path.join(scratch, f"crosscheck-{os.getpid()}-{label}")
    out = prefix + ".safetensors"
    tensors, args, raws = [], [pack_raw, out], []
    if empty_metadata:
        args.append("--empty-metadata")
        metadata = {}
    for key, value in (metadata or {}).items():
        args += ["--metadata", f"{key}={value}"]
    if alignment != 8:
        args += ["--align", str(alignment)]
    for i, (name, dtype, shape) in enumerate(specs):
        raw, array = make_tensor(dtype, shape)
        raw_path = f"{prefix}-{i}.raw"
        with open(raw_path, "wb") as f:
            f.write(raw)
        raws.append(raw_path)
        tensors.append({"name": name, "dtype": dtype, "shape": tuple(shape), "raw": raw,
                        "array": array})
        args.append(f"{name}:{dtype}:{'x'.join(str(d) for d in shape)}:{raw_path}")
    result = subprocess.run(args, capture_output=True)
    if result.returncode != 0:
        fail(f"{label}: pack_raw exited {result.returncode}: {result.stderr.decode(errors='replace')}")
    try:
        decode_and_compare(out, tensors, metadata, alignment)
        with open(out, "rb") as f:
            ours = f.read()
        want = expected_file(tensors, metadata, alignment)
        if ours != want:
            at = next((i for i, (a, b) in enumerate(zip(ours, want)) if a != b), min(len(ours), len(want)))
            fail(f"{label}: file differs from the FORMAT.md rules at byte {at} "
                 f"(ours {len(ours)} bytes, expected {len(want)}):\n"
                 f"  ours:     {ours[max(0, at - 40):at + 40]!r}\n"
                 f"  expected: {want[max(0, at - 40):at + 40]!r}")
        checks += 1
    finally:
        for path in raws + [out]:
            if os.path.exists(path):
                os.remove(path)
    print(f"crosscheck: ok: {label}: {len(specs)} tensors, "
          f"metadata={'none' if metadata is None else len(metadata)} keys, alignment {alignment}, "
          f"{len(ours)} bytes")


SHAPES = [(2, 3), (), (0,), (5,), (3, 1, 2), (2, 0, 4)]
SUB_BYTE_SHAPES = {"F4": [(2, 5), (4,), (0,)], "F6_E2M3": [(4,), (2, 4), (0, 3)],
                   "F6_E3M2": [(8,), (4, 1), (0,)]}

ODD_NAMES = [
    "quote\"back\\slash", "ctl\b\t\n\f\r", "low\x00\x01\x1f", "del\x7f", "caf\u00e9",
    "\u65e5\u672c\u8a9e", "emoji\U0001F600", "co:lon:s", "", "Z", "a", "\u00e9", "z.weight",
]


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    pack_raw, scratch = sys.argv[1], sys.argv[2]
    os.makedirs(scratch, exist_ok=True)

    every = []
    for dtype in WRITE_ORDER:
        shapes = SUB_BYTE_SHAPES.get(dtype, SHAPES)
        for k, shape in enumerate(shapes):
            every.append((f"{dtype.lower()}.{k}", dtype, shape))
    run_case("every-dtype", pack_raw, scratch, every)
    run_case("every-dtype-metadata", pack_raw, scratch, every, metadata={"format": "pt"})

    dtypes = [d for d in WRITE_ORDER if d not in SUB_BYTE_SHAPES]
    odd = [(name, dtypes[i % len(dtypes)], (3,)) for i, name in enumerate(ODD_NAMES)
           if "\x00" not in name]  # argv cannot carry NUL; unit tests cover it
    run_case("odd-names", pack_raw, scratch, odd,
             metadata={"z": "last", "A": "first", "caf\u00e9": "\u00fcber\n\"quoted\"",
                       "tab\tkey": "\x1f", "": "empty key"})
    run_case("same-dtype-names", pack_raw, scratch,
             [(n, "F32", (2,)) for n in ["b", "a", "B", "\u00e9", "e", "aa", "a.b", "a_b"]])
    run_case("align-4096", pack_raw, scratch, every[:10], alignment=4096)
    run_case("align-64-metadata", pack_raw, scratch, every[10:20], alignment=64,
             metadata={"k": "v"})
    run_case("empty-metadata", pack_raw, scratch, [], empty_metadata=True)
    run_case("empty-metadata-tensor", pack_raw, scratch, [("x", "I8", (4,))],
             empty_metadata=True)
    run_case("nothing", pack_raw, scratch, [])
    run_case("large", pack_raw, scratch,
             [("big", "F32", (512, 1024)), ("mid", "BF16", (1000, 3)), ("flag", "BOOL", (7,))])
    print(f"crosscheck: all {checks} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
