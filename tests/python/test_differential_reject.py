"""Rejecting, against the reference 0.8: random mutations of valid files (bytes flipped, the
header's JSON edited, the length field changed, truncation, bytes appended) are accepted by
both packages or refused by both with the same kind of error; when both accept, they read the
same tensors and metadata.

We are stricter than the reference in two places, listed in docs/FORMAT.md ("Deliberate
differences") and recognised here precisely (`ours_stricter`): duplicate keys anywhere in the
header, and NUL characters in names or metadata. Any other file we refuse and the reference
reads, or the other way round, fails the test.
"""

import json
import os
import struct

import pytest

import reference_oracle
from differential import outcome, prop, same_error

REF, REF_TORCH, REF_NUMPY = reference_oracle.require()

import numpy as np  # noqa: E402
from hypothesis import event, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import libsafetensors  # noqa: E402

DTYPES = ["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "C64", "F4", "F6_E2M3",
          "I32", "U16"]
BITS = {"F32": 32, "F16": 16, "BF16": 16, "I64": 64, "U8": 8, "BOOL": 8, "F8_E4M3": 8,
        "C64": 64, "F4": 4, "F6_E2M3": 6, "I32": 32, "U16": 16}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("differential_reject")


@st.composite
def valid_headers(draw):
    """A header (list of (key, value) pairs) and the data size it describes."""
    count = draw(st.integers(0, 3))
    names = draw(st.lists(st.sampled_from(["a", "b", "c", "w.0", "é"]), min_size=count,
                          max_size=count, unique=True))
    pairs, offset = [], 0
    if draw(st.booleans()):
        pairs.append(("__metadata__", {"format": draw(st.sampled_from(["pt", "np"]))}))
    for name in names:
        dtype = draw(st.sampled_from(DTYPES))
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        if BITS[dtype] < 8:
            shape = shape + [4]  # whole bytes
        size = int(np.prod(shape, dtype=np.int64)) * BITS[dtype] // 8
        pairs.append((name, {"dtype": dtype, "shape": shape,
                             "data_offsets": [offset, offset + size]}))
        offset += size
    return pairs, offset


def encode(pairs, pad=True):
    text = json.dumps(dict(pairs) if not _duplicates(pairs) else None,
                      separators=(",", ":"), ensure_ascii=False)
    if text == "null":
        text = "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" +
                              json.dumps(v, separators=(",", ":"), ensure_ascii=False)
                              for k, v in pairs) + "}"
    raw = text.encode("utf-8")
    if pad:
        raw += b" " * (-(len(raw) + 8) % 8)
    return raw


def _duplicates(pairs):
    keys = [k for k, _ in pairs]
    return len(set(keys)) != len(keys)


JUNK = st.one_of(st.integers(-3, 2**64 + 1), st.floats(allow_nan=False), st.text(max_size=4),
                 st.none(), st.booleans(), st.lists(st.integers(-1, 9), max_size=3),
                 st.sampled_from(["F33", "f32", "BF16 ", "F8_E4M3FNUZ", "F6_E3M2", "U64"]))


@st.composite
def edited_header(draw, pairs):
    """One structural edit of the header's JSON."""
    pairs = [(k, json.loads(json.dumps(v))) for k, v in pairs]
    kind = draw(st.sampled_from(["field", "drop", "extra", "dup", "meta", "rename", "offset",
                                 "shape", "dtype", "top"]))
    tensors = [i for i, (k, _) in enumerate(pairs) if k != "__metadata__"]
    if kind == "top" or not tensors:
        pairs.append((draw(st.sampled_from(["__metadata__", "x", "a"])), draw(JUNK)))
        return pairs
    i = draw(st.sampled_from(tensors))
    name, entry = pairs[i]
    if kind == "field":
        entry[draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = draw(JUNK)
    elif kind == "drop":
        entry.pop(draw(st.sampled_from(sorted(entry))))
    elif kind == "extra":
        entry[draw(st.sampled_from(["extra", "Dtype", ""]))] = draw(JUNK)
    elif kind == "dup":
        pairs.append((name, json.loads(json.dumps(entry))))
    elif kind == "meta":
        pairs.insert(0, ("__metadata__", draw(st.one_of(
            st.dictionaries(st.text(max_size=3), st.one_of(st.text(max_size=3), JUNK),
                            max_size=2), JUNK))))
    elif kind == "rename":
        pairs[i] = (draw(st.sampled_from(["", "\0", "a\0b", "__metadata__", "b"])), entry)
    elif kind == "offset":
        entry["data_offsets"][draw(st.integers(0, 1))] += draw(st.integers(-3, 3))
    elif kind == "shape":
        shape = entry["shape"]
        if shape and draw(st.booleans()):
            shape[draw(st.integers(0, len(shape) - 1))] += draw(st.integers(-1, 2))
        else:
            shape.append(draw(st.integers(0, 2)))
    elif kind == "dtype":
        entry["dtype"] = draw(st.sampled_from(DTYPES))
    return pairs


@st.composite
def mutated_files(draw):
    pairs, size = draw(valid_headers())
    data = bytes(draw(st.binary(min_size=size, max_size=size)))
    how = draw(st.sampled_from(["none", "edit", "edit", "edit", "flip", "flip", "truncate",
                                "extend", "length", "text"]))
    header = encode(pairs)
    if how == "edit":
        header = encode(draw(edited_header(pairs)), pad=draw(st.booleans()))
    elif how == "text":
        # A raw edit of the JSON text: a byte replaced by one that matters to a parser.
        at = draw(st.integers(0, len(header) - 1))
        header = header[:at] + draw(st.sampled_from(
            [b" ", b"\t", b"0", b"-", b"1e2", b"\\", b'"', b"}", b"{", b",", b"\xff", b"\xc3",
             b"\0", b"\n"])) + header[at + 1:]
    blob = struct.pack("<Q", len(header)) + header + data
    if how == "flip":
        blob = bytearray(blob)
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(blob) - 1))
            blob[at] ^= draw(st.integers(1, 255))
        blob = bytes(blob)
    elif how == "truncate":
        blob = blob[:draw(st.integers(0, len(blob) - 1))]
    elif how == "extend":
        blob += draw(st.binary(min_size=1, max_size=9))
    elif how == "length":
        n = len(header) + draw(st.sampled_from([-9, -8, -1, 1, 8, 2**63, 100_000_001]))
        blob = struct.pack("<Q", n % 2**64) + blob[8:]
    return blob


def read_all(module, path_or_blob):
    """What a package sees in a file: deserialize's list, and safe_open's keys and metadata."""
    if isinstance(path_or_blob, bytes):
        return [(k, v["dtype"], v["shape"], bytes(v["data"]))
                for k, v in sorted(module.deserialize(path_or_blob))]
    with module.safe_open(path_or_blob, "np") as f:
        return f.keys(), f.metadata(), [f.get_slice(k).get_shape() for k in f.keys()]


def ours_stricter(blob):
    """Why we refuse a file the reference reads (docs/FORMAT.md), or None."""
    (n,) = struct.unpack("<Q", blob[:8])
    text = blob[8:8 + n].decode("utf-8")
    pairs = json.loads(text, object_pairs_hook=lambda p: p)
    seen = []

    def walk(p):
        if isinstance(p, list) and all(isinstance(x, tuple) and len(x) == 2 for x in p):
            keys = [k for k, _ in p]
            seen.append(len(set(keys)) != len(keys))
            for _, v in p:
                walk(v)

    walk(pairs)
    if any(seen):
        return "duplicate key"
    texts = [k for k, _ in pairs]
    for key, value in pairs:
        if key == "__metadata__" and isinstance(value, list):
            texts += [t for kv in value for t in kv if isinstance(t, str)]
    if any("\0" in t for t in texts):
        return "NUL character in a name or in metadata"
    return None


def check(ours, ref, blob):
    event(f"ours {ours[0]}, reference {ref[0]}")
    if ours[0] == ref[0] == "ok":
        assert ours[1] == ref[1]
        return
    if ours[0] == ref[0] == "error":
        assert same_error(ours[1], ref[1]), (ours[1], ref[1])
        return
    assert ours[0] == "error", f"we accept a file the reference refuses: {ref[1]!r}"
    assert type(ours[1]).__name__ == "SafetensorError", ours[1]
    why = ours_stricter(blob)
    assert why is not None, f"we refuse a file the reference reads: {ours[1]}"


@prop()
@given(blob=mutated_files())
def test_mutated_files_are_refused_alike(scratch, blob):
    check(outcome(lambda: read_all(libsafetensors, blob)),
          outcome(lambda: read_all(REF, blob)), blob)
    path = os.path.join(scratch, "mutated.st")
    with open(path, "wb") as f:
        f.write(blob)
    check(outcome(lambda: read_all(libsafetensors, path)), outcome(lambda: read_all(REF, path)),
          blob)
