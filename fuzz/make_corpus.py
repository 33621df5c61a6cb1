#!/usr/bin/env python3
"""Writes the seed corpora of the header, slice, index, round-trip and UTF-8 fuzzers: small
valid and invalid safetensors files, slice requests, index files, writer inputs and text.

Run from anywhere: python3 fuzz/make_corpus.py. The output is committed; rerun after editing.
"""
import json
import pathlib
import struct

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"


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


# ---- fuzz_slice: dtype, rank, dimensions, argument count, arguments, then tensor bytes.
# Dtype numbers are the enumerator order of include/safetensors/dtype.hpp.
DTYPE_NUMBER = {"BOOL": 0, "U8": 1, "I8": 2, "I16": 8, "F16": 10, "F32": 14, "I64": 15, "F64": 17,
                "C64": 18, "F4": 19, "F6_E2M3": 20}


def index(i, huge=False):
    """An argument selecting position i (negative counts from the end)."""
    return bytes([1 | (8 if huge else 0), i & 0xFF])


def span(start=None, stop=None, step=1, huge=False):
    """An argument selecting [start:stop:step]; None leaves a bound out."""
    control = (2 if start is not None else 0) | (4 if stop is not None else 0) | (8 if huge else 0)
    out = bytes([control])
    out += bytes([start & 0xFF]) if start is not None else b""
    out += bytes([stop & 0xFF]) if stop is not None else b""
    return out + bytes([step & 0xFF])


def slice_seed(dtype, shape, *args):
    data = bytes((i * 37 + 11) & 0xFF for i in range(256))
    return (bytes([DTYPE_NUMBER[dtype], len(shape)]) + bytes(shape) + bytes([len(args)])
            + b"".join(args) + data)


SLICE_SEEDS = {
    "rows_of_matrix": slice_seed("F32", [4, 5], span(1, 3)),
    "column": slice_seed("I16", [4, 5], span(), index(-1)),
    "strided_3d": slice_seed("F64", [3, 4, 5], span(None, None, 2), span(1, None, 3), span(-4, -1)),
    "index_everywhere": slice_seed("U8", [2, 3, 4], index(1), index(-3), index(0)),
    "scalar": slice_seed("C64", []),
    "empty_dimension": slice_seed("F16", [3, 0, 2], span(1, 2)),
    "empty_selection": slice_seed("BOOL", [5], span(4, 1)),
    "out_of_range_index": slice_seed("I8", [3], index(3)),
    "zero_step": slice_seed("I64", [4], span(None, None, 0)),
    "negative_step": slice_seed("I64", [4], span(None, None, -1)),
    "too_many_arguments": slice_seed("U8", [2], span(), span()),
    "huge_bounds": slice_seed("F32", [3, 3], span(-128, 127, 1, huge=True),
                              span(0, -1, 2, huge=True)),
    "huge_index": slice_seed("F32", [3], index(-128, huge=True)),
    "packed_rows": slice_seed("F4", [4, 6], span(1, 3)),
    "packed_misaligned": slice_seed("F4", [3, 3], span(), span(1, 2)),
    "packed_six_bit": slice_seed("F6_E2M3", [2, 4], index(1)),
    # A dimension byte of 250 + k is 4096 + k: rows of 32 KiB, read run by run when unmapped.
    "sparse_columns": slice_seed("F64", [3, 254], span(), span(0, 1)),
    "sparse_packed": slice_seed("F4", [2, 250, 2], span(), span(None, None, 4)),
}

# ---- fuzz_index: index files as transformers writes them, and broken ones.


def index_json(weight_map, metadata=None, **dump):
    doc = {"metadata": metadata if metadata is not None else {"total_size": 64},
           "weight_map": weight_map}
    return json.dumps(doc, **dump).encode()


INDEX_SEEDS = {
    "transformers": index_json({"embed.weight": "model-00001-of-00002.safetensors",
                                "lm_head.weight": "model-00002-of-00002.safetensors"},
                               {"total_size": 1234, "format": "pt"}, indent=2, sort_keys=True),
    "compact_unicode": index_json({"w\u00e9\n\"": "sub/dir/shard.safetensors", "": "a"},
                                  {"total_size": 0, "note": "\U0001f600"}, ensure_ascii=False),
    "extra_members": b'{"metadata":{"total_size":8,"total_parameters":2,"x":null},'
                     b'"weight_map":{"a":"s"},"other":[1,{"b":2}]}',
    "no_metadata": b'{"weight_map":{}}',
    "bad_duplicate_tensor": b'{"weight_map":{"a":"s1","a":"s2"}}',
    "bad_duplicate_key": b'{"weight_map":{},"weight_map":{}}',
    "bad_total_size": b'{"metadata":{"total_size":-1},"weight_map":{}}',
    "bad_total_size_fraction": b'{"metadata":{"total_size":1.5e3},"weight_map":{}}',
    "bad_shard_type": b'{"weight_map":{"a":7}}',
    "bad_no_weight_map": b'{"metadata":{}}',
    "bad_not_object": b'[{"weight_map":{}}]',
    "bad_utf8": b'{"weight_map":{"\xed\xa0\x80":"s"}}',
    "lone_surrogate_escapes": b'{"metadata":{"k":"\\udc00x"},"weight_map":{"\\ud800":"s"}}',
    "shard_paths": index_json({"a": "../up.safetensors", "b": "/abs", "c": "x\\y", "d": "a/../b",
                               "e": "..hidden", "f": "ok/..x", "g": "nul\u0000"}),
}

# ---- fuzz_roundtrip: tensor count, then per tensor name length, name, dtype, rank,
# dimensions and data; then metadata key count (0 = none), keys and values; alignment.


def text(s):
    b = s.encode() if isinstance(s, str) else s
    return bytes([len(b)]) + b


def tensor(name, dtype, shape):
    return text(name) + bytes([DTYPE_NUMBER[dtype], len(shape)]) + bytes(shape) + bytes(range(64))


def roundtrip_seed(tensors, metadata=None, alignment_shift=0):
    out = bytes([len(tensors)]) + b"".join(tensors)
    if metadata is None:
        out += b"\x00"
    else:
        out += bytes([len(metadata) + 1]) + b"".join(text(k) + text(v) for k, v in metadata.items())
    return out + bytes([alignment_shift])


ROUNDTRIP_SEEDS = {
    "two_tensors": roundtrip_seed([tensor("w", "F32", [2, 3]), tensor("b", "I8", [3])]),
    "every_width": roundtrip_seed([tensor("a", "BOOL", [2]), tensor("b", "F64", [1]),
                                   tensor("c", "F16", [2, 2]), tensor("d", "F4", [2, 2]),
                                   tensor("e", "C64", [])]),
    "metadata": roundtrip_seed([tensor("x", "U8", [4])], {"format": "pt", "k": "v\n\"q"}, 3),
    "empty_metadata": roundtrip_seed([tensor("x", "U8", [0, 3])], {}, 1),
    "odd_names": roundtrip_seed([tensor("\u00e9\t\x01", "I64", [1]), tensor("", "U8", [1])]),
    "duplicate_names": roundtrip_seed([tensor("same", "U8", [1]), tensor("same", "I8", [1])]),
    "reserved_name": roundtrip_seed([tensor("__metadata__", "U8", [1])]),
    "invalid_utf8_name": roundtrip_seed([tensor(b"\xed\xa0\x80", "U8", [1])]),
    "packed_misaligned": roundtrip_seed([tensor("p", "F6_E2M3", [3])]),
    "no_tensors": roundtrip_seed([], None, 2),
}

# ---- fuzz_utf8: text with each sequence length, each kind of ill-formed sequence and each
# character the JSON string writer escapes.
UTF8_SEEDS = {
    "ascii": b"model.layers.0.self_attn.q_proj.weight",
    "every_length": "a\u00e9\u20ac\U0001F600\U0010FFFF".encode(),
    "escapes": b"\"\\\b\t\n\f\r\x00\x01\x1f\x7f",
    "overlong": b"\xc0\x80 \xe0\x80\x80 \xf0\x80\x80\x80",
    "surrogate": b"\xed\xa0\x80\xed\xbf\xbf",
    "above_max": b"\xf4\x90\x80\x80\xf5\x80",
    "truncated": b"ok\xe2\x82",
    "stray_continuation": b"\x80\xbf\xc3",
}


def main():
    for corpus, seeds in (("header", SEEDS), ("slice", SLICE_SEEDS), ("index", INDEX_SEEDS),
                          ("roundtrip", ROUNDTRIP_SEEDS), ("utf8", UTF8_SEEDS)):
        out = CORPUS / corpus
        out.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (out / name).write_bytes(data)


if __name__ == "__main__":
    main()
