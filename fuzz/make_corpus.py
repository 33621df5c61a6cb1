#!/usr/bin/env python3
"""Writes the header fuzzer's seed corpus: small valid and invalid safetensors files.

Run from anywhere: python3 fuzz/make_corpus.py. The output is committed; rerun after editing.
"""
import json
import pathlib
import struct

OUT = pathlib.Path(__file__).resolve().parent / "corpus" / "header"


def entry(dtype, shape, begin, end, **extra):
    fields = {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}
    fields.update(extra)
    return fields


def file_bytes(header, data=b"", pad=True):
    text = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + data


def layers(count):
    """`count` BF16 tensors of varying length, laid out back to back, and their total size."""
    header, offset = {}, 0
    for i in range(count):
        length = i % 3 + 1
        header[f"layer.{i}.w"] = entry("BF16", [length], offset, offset + 2 * length)
        offset += 2 * length
    return header, offset


def header_mode(header, data_size):
    """The fuzzer's second reading: the prefix is the data size and the rest is the JSON."""
    return struct.pack("<Q", data_size) + json.dumps(header, separators=(",", ":")).encode()


SEEDS = {
    "valid_two_tensors": file_bytes(
        {"__metadata__": {"format": "pt"},
         "w": entry("F32", [2, 2], 0, 16), "b": entry("BF16", [3], 16, 22)},
        bytes(22)),
    "valid_empty": file_bytes({}),
    "valid_metadata_null": file_bytes(b'{"__metadata__":null}'),
    "valid_scalar_and_empty": file_bytes(
        {"s": entry("F64", [], 0, 8), "e": entry("I32", [0, 4], 8, 8), "f": entry("U8", [0], 8, 8)},
        bytes(8)),
    "valid_subbyte": file_bytes(
        {"a": entry("F4", [3, 2], 0, 3), "b": entry("F6_E2M3", [4], 3, 6),
         "c": entry("F6_E3M2", [4], 6, 9), "d": entry("F8_E4M3FNUZ", [1], 9, 10)},
        bytes(10)),
    "valid_unknown_fields": file_bytes(
        b'{"w":{"x":{"a":[1,-2.5e-3,null,true,false,"\\u00e9"]},"dtype":"C64",'
        b'"shape":[1],"data_offsets":[0,8],"y":[]}}', bytes(8)),
    "valid_escaped_names": file_bytes(
        b'{"":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
        b'"\\ud83d\\ude00\\n\\"":{"dtype":"BOOL","shape":[1],"data_offsets":[1,2]}}', bytes(2)),
    "invalid_duplicate": file_bytes(
        b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
        b'"\\u0061":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', bytes(2)),
    "invalid_hole": file_bytes(
        {"a": entry("U8", [1], 0, 1), "b": entry("U8", [1], 2, 3)}, bytes(3)),
    "invalid_size": file_bytes({"a": entry("I64", [2], 0, 8)}, bytes(8)),
    "invalid_numbers": file_bytes(
        b'{"a":{"dtype":"U16","shape":[18446744073709551615,-0,1e3],"data_offsets":[0,1.5]}}'),
    "invalid_trailing": file_bytes({"a": entry("U64", [1], 0, 8)}, bytes(12)),
    "invalid_utf8": file_bytes(b'{"\xc0\xaf":{}}'),
    "invalid_nul_padding": struct.pack("<Q", 8) + b"{}\0\0\0\0\0\0",
    "invalid_too_small": b"\x02\x00\x00",
    "invalid_length": struct.pack("<Q", 1000) + b"{}",
    "header_mode_two_tensors": header_mode(
        {"__metadata__": {"k": "v"}, "a": entry("F16", [2, 3], 0, 12), "b": entry("U32", [], 12, 16)},
        16),
    "header_mode_empty_tensors": header_mode(
        {"a": entry("F32", [0], 0, 0), "b": entry("F4", [4], 0, 2), "c": entry("I8", [1, 0], 2, 2)}, 2),
    "header_mode_many": header_mode(*layers(12)),
}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in SEEDS.items():
        (OUT / name).write_bytes(data)


if __name__ == "__main__":
    main()
