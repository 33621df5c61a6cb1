"""An independent, numpy-only model of the file format (FORMAT.md), used as an oracle.

`decode` reads a file with nothing but json, struct and numpy; `encode` writes one the way a
torch-side exporter that never heard of libsafetensors would (tensors in the order given,
header padded with spaces to a multiple of 8).
"""

import json
import struct

import numpy as np

NUMPY_NAMES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "<i2", "U16": "<u2", "F16": "<f2",
    "I32": "<i4", "U32": "<u4", "F32": "<f4", "I64": "<i8", "U64": "<u8", "F64": "<f8",
    "C64": "<c8",
}  # fmt: skip
RAW_BYTES = {"BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}


def decode(blob):
    """(tensors, metadata): numpy arrays for the numpy dtypes, (dtype, shape, bytes) otherwise."""
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + length].decode("utf-8"))
    metadata = header.pop("__metadata__", None)
    data = blob[8 + length :]
    out = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        raw = data[begin:end]
        if entry["dtype"] in NUMPY_NAMES:
            out[name] = np.frombuffer(raw, dtype=NUMPY_NAMES[entry["dtype"]]).reshape(
                entry["shape"])
        else:
            out[name] = (entry["dtype"], entry["shape"], bytes(raw))
    return out, metadata


def encode(tensors, metadata=None, pad_to=8):
    """`tensors`: name -> (dtype, shape, raw little-endian bytes), laid out in dict order."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % pad_to)
    return struct.pack("<Q", len(text)) + text + b"".join(raw for _, _, raw in tensors.values())
