#!/usr/bin/env python3
"""End-to-end checks of the `safetensors` command.

Usage: cli_test.py SAFETENSORS_BIN SCRATCH_DIR

Input files are written here by hand with struct + json, and the expected output of
`merge` is computed here from the writer rules of FORMAT.md, independently of the library.
"""

import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

BIN = sys.argv[1]
SCRATCH_ROOT = sys.argv[2]

# FORMAT.md "Writing": the order tensors are laid out in, by dtype.
WRITE_ORDER = ["U64", "I64", "F64", "C64", "F32", "U32", "I32", "BF16", "F16", "U16", "I16",
               "F8_E5M2FNUZ", "F8_E4M3FNUZ", "F8_E8M0", "F8_E4M3", "F8_E5M2", "I8", "U8",
               "F6_E3M2", "F6_E2M3", "F4", "BOOL"]

passed = 0
failed = 0


def check(name, condition, detail=""):
    global passed, failed
    if condition:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {name}" + (f"\n  {detail}" if detail else ""))


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True)


# ---------------------------------------------------------------- file construction

def raw_file(path, header_text, data, pad_to=8):
    """Writes an arbitrary header text (possibly invalid) followed by `data`."""
    header = header_text.encode("utf-8")
    header += b" " * ((-(8 + len(header))) % pad_to)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + data)


def entry_json(dtype, shape, begin, end):
    return (f'{{"dtype":"{dtype}","shape":[{",".join(map(str, shape))}],'
            f'"data_offsets":[{begin},{end}]}}')


def escape(text):
    """FORMAT.md string escaping, written out rule by rule."""
    short = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
             "\r": "\\r"}
    out = []
    for ch in text:
        if ch in short:
            out.append(short[ch])
        elif ord(ch) < 0x20:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def plain_file(path, tensors, metadata=None, reverse=False, pad_to=8):
    """A valid file whose data is laid out in name order (reversed on request), which is
    not the canonical order, so `merge` has real work to do. tensors: name -> (dtype,
    shape, bytes)."""
    names = sorted(tensors, reverse=reverse)
    parts, data = [], b""
    if metadata is not None:
        parts.append('"__metadata__":{' + ",".join(
            f"{escape(k)}:{escape(v)}" for k, v in metadata.items()) + "}")
    for name in names:
        dtype, shape, blob = tensors[name]
        parts.append(f"{escape(name)}:" + entry_json(dtype, shape, len(data), len(data) + len(blob)))
        data += blob
    raw_file(path, "{" + ",".join(parts) + "}", data, pad_to)


def canonical_bytes(tensors, metadata=None, alignment=8):
    """The exact bytes FORMAT.md's writer rules prescribe."""
    names = sorted(tensors, key=lambda n: (WRITE_ORDER.index(tensors[n][0]), n.encode("utf-8")))
    parts, data = [], b""
    if metadata is not None:
        parts.append('"__metadata__":{' + ",".join(
            f"{escape(k)}:{escape(metadata[k])}"
            for k in sorted(metadata, key=lambda k: k.encode("utf-8"))) + "}")
    for name in names:
        dtype, shape, blob = tensors[name]
        parts.append(f"{escape(name)}:" + entry_json(dtype, shape, len(data), len(data) + len(blob)))
        data += blob
    header = ("{" + ",".join(parts) + "}").encode("utf-8")
    header += b" " * ((-(8 + len(header))) % alignment)
    return struct.pack("<Q", len(header)) + header + data


def read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def f32(*values):
    return struct.pack(f"<{len(values)}f", *values)


def u16(*values):
    return struct.pack(f"<{len(values)}H", *values)


# ---------------------------------------------------------------- checks

def check_help_and_usage(_scratch):
    r = run("--help")
    check("--help exits 0", r.returncode == 0 and "inspect" in r.stdout and "merge" in r.stdout,
          r.stdout + r.stderr)
    r = run("--version")
    check("--version exits 0", r.returncode == 0 and r.stdout.strip().startswith("safetensors"),
          r.stdout + r.stderr)
    helps_ok = True
    for sub, word in [("inspect", "metadata"), ("validate", "format"), ("merge", "union"),
                      ("get", "values")]:
        r = run(sub, "--help")
        if r.returncode != 0 or word not in r.stdout or sub not in r.stdout:
            helps_ok = False
            print(f"  {sub} --help: rc={r.returncode}\n{r.stdout}{r.stderr}")
    check("every subcommand --help exits 0 with a description", helps_ok)

    usage_cases = [
        [],
        ["frobnicate"],
        ["inspect"],
        ["inspect", "x.safetensors", "--sort", "size"],
        ["get", "x.safetensors"],
        ["get", "x.safetensors", "w", "-n", "many"],
        ["get", "x.safetensors", "w", "-n", "-3"],
        ["merge", "a.safetensors"],
        ["merge", "a.safetensors", "-o", "out.safetensors", "--align", "100"],
        ["validate", "--no-such-option", "x.safetensors"],
    ]
    bad = []
    for args in usage_cases:
        r = run(*args)
        if r.returncode != 2 or not r.stderr.strip() or r.stdout.strip():
            bad.append(f"{args}: rc={r.returncode} stderr={r.stderr!r}")
    check("usage errors exit 2 with a message on stderr", not bad, "\n  ".join(bad))


def model_tensors():
    return {
        "embed.weight": ("BF16", [4, 2], u16(*range(0x3F80, 0x3F88))),
        "layer.0.bias": ("F32", [3], f32(1.0, 2.0, 3.0)),
        "layer.0.weight": ("F32", [2, 3], f32(*range(6))),
        "step": ("I64", [], struct.pack("<q", 7)),
        "empty": ("F16", [0, 5], b""),
    }


def check_inspect(scratch):
    path = os.path.join(scratch, "model.safetensors")
    tensors = model_tensors()
    plain_file(path, tensors, {"format": "pt", "note": 'say "hi"\n'})
    r = run("inspect", path)
    out = r.stdout
    check("inspect exits 0", r.returncode == 0, r.stderr)
    lines = out.splitlines()
    # Data order is name order in this file: "embed.weight" first, at offset 0.
    rows = [line.split() for line in lines if line.strip().split(" ")[0] in tensors]
    row_names = [row[0] for row in rows]
    check("inspect lists tensors in offset order", row_names == sorted(tensors), out)
    embed = next((line for line in lines if line.strip().startswith("embed.weight")), "")
    check("inspect row shows dtype, shape, bytes and offsets",
          "BF16" in embed and "[4, 2]" in embed and "16 B" in embed and "[0, 16)" in embed, embed)
    weight = next((line for line in lines if line.strip().startswith("layer.0.weight")), "")
    check("inspect row of a later tensor has file offsets",
          "[2, 3]" in weight and "[28, 52)" in weight, weight)
    check("inspect totals", "tensors:     5" in out and "parameters:  18 " in out
          and "header size:" in out and "BF16" in out, out)
    check("inspect shows metadata", "format: pt" in out, out)

    r = run("inspect", "--sort", "name", path)
    names = [line.split()[0] for line in r.stdout.splitlines()
             if line.strip().split(" ")[0] in tensors]
    check("inspect --sort name", names == sorted(tensors, key=str.encode), r.stdout)

    r = run("inspect", "--json", path)
    try:
        doc = json.loads(r.stdout)
    except ValueError as e:
        check("inspect --json parses", False, f"{e}: {r.stdout!r}")
        return
    header_len = struct.unpack("<Q", read_bytes(path)[:8])[0]
    by_name = {t["name"]: t for t in doc["tensors"]}
    ok = (doc["file"] == path and doc["header_size"] == header_len
          and doc["metadata"] == {"format": "pt", "note": 'say "hi"\n'}
          and list(by_name) == sorted(tensors)
          and by_name["layer.0.weight"] == {"name": "layer.0.weight", "dtype": "F32",
                                            "shape": [2, 3], "data_offsets": [28, 52],
                                            "bytes": 24}
          and by_name["step"]["shape"] == []
          and doc["totals"] == {"tensors": 5, "parameters": 18, "bytes": 60,
                                "bytes_by_dtype": {"BF16": 16, "F32": 36, "I64": 8, "F16": 0}})
    check("inspect --json has the right values", ok, json.dumps(doc, indent=1))

    odd = os.path.join(scratch, "odd names.safetensors")
    plain_file(odd, {'quote"back\\slash\ttab\x01ctl': ("U8", [1], b"\x05"),
                     "unicodé ✓": ("U8", [1], b"\x06")})
    r = run("inspect", "--json", odd)
    try:
        names = sorted(t["name"] for t in json.loads(r.stdout)["tensors"])
        check("inspect --json escapes names", names ==
              sorted(['quote"back\\slash\ttab\x01ctl', "unicodé ✓"]), r.stdout)
    except ValueError as e:
        check("inspect --json escapes names", False, f"{e}: {r.stdout!r}")
    r = run("inspect", "--json", os.path.join(scratch, "none.safetensors"))
    check("inspect of a missing file exits 1", r.returncode == 1
          and r.stderr.startswith("safetensors: "), r.stderr)


def check_validate(scratch):
    good = os.path.join(scratch, "good.safetensors")
    plain_file(good, model_tensors())
    hole = os.path.join(scratch, "hole.safetensors")
    raw_file(hole, '{"a":' + entry_json("F32", [1], 0, 4) + ',"gap_after":'
             + entry_json("F32", [1], 8, 12) + "}", bytes(12))
    mismatch = os.path.join(scratch, "mismatch.safetensors")
    raw_file(mismatch, '{"short_one":' + entry_json("F32", [2], 0, 4) + "}", bytes(4))
    dup = os.path.join(scratch, "dup.safetensors")
    raw_file(dup, '{"twice":' + entry_json("U8", [1], 0, 1) + ',"twice":'
             + entry_json("U8", [1], 1, 2) + "}", bytes(2))
    missing = os.path.join(scratch, "missing.safetensors")

    r = run("validate", good)
    check("validate good file", r.returncode == 0
          and r.stdout == f"{good}: OK (5 tensors)\n" and r.stderr == "", r.stdout + r.stderr)
    r = run("validate", "-q", good)
    check("validate -q is quiet", r.returncode == 0 and r.stdout == "", r.stdout)

    for path, code, tensor in [(hole, "invalid_offsets", "gap_after"),
                               (mismatch, "size_mismatch", "short_one"),
                               (dup, "duplicate_key", "twice"),
                               (missing, "io", None)]:
        r = run("validate", path)
        lines = r.stderr.splitlines()
        ok = (r.returncode == 1 and r.stdout == "" and len(lines) == 1
              and lines[0].startswith(f"{path}: {code}: ")
              and (tensor is None or tensor in lines[0]))
        check(f"validate reports {code}", ok, f"rc={r.returncode} {r.stderr!r}")

    r = run("validate", good, hole, good)
    check("validate several files", r.returncode == 1 and r.stdout.count(": OK (5 tensors)") == 2
          and len(r.stderr.splitlines()) == 1, r.stdout + r.stderr)


def check_merge(scratch):
    a_tensors = {
        "z.weight": ("F32", [2], f32(1.5, -2.0)),
        "b.bias": ("U8", [3], b"\x01\x02\x03"),
        "packed": ("F4", [4], b"\x21\xf7"),
    }
    b_tensors = {
        "a.embed": ("BF16", [2], u16(0x3F80, 0xC040)),
        "count": ("U64", [1], struct.pack("<Q", 2**64 - 1)),
        "flag": ("BOOL", [2], b"\x00\x01"),
        "m": ("F8_E4M3", [1, 1], b"\x7e"),
    }
    a = os.path.join(scratch, "a.safetensors")
    b = os.path.join(scratch, "b.safetensors")
    plain_file(a, a_tensors, {"format": "pt"}, reverse=True)
    plain_file(b, b_tensors, {"author": "me", "format": "pt"}, pad_to=64)
    out = os.path.join(scratch, "merged.safetensors")
    union = {**a_tensors, **b_tensors}

    r = run("merge", a, b, "-o", out)
    check("merge exits 0", r.returncode == 0, r.stderr)
    expected = canonical_bytes(union, {"author": "me", "format": "pt"})
    actual = read_bytes(out)
    check("merge writes the canonical bytes with the metadata union", actual == expected,
          f"expected {expected[:300]!r}\n  actual   {actual[:300]!r}")

    r = run("merge", a, b, "-o", out, "--align", "4096")
    actual = read_bytes(out)
    check("merge --align 4096 replaces the existing output", r.returncode == 0
          and actual == canonical_bytes(union, {"author": "me", "format": "pt"}, 4096)
          and (8 + struct.unpack("<Q", actual[:8])[0]) % 4096 == 0, r.stderr)

    c = os.path.join(scratch, "c.safetensors")
    d = os.path.join(scratch, "d.safetensors")
    plain_file(c, {"x": ("I8", [2], b"\xff\x01")})
    plain_file(d, {"y": ("I16", [1], b"\x01\x00")})
    nometa = os.path.join(scratch, "nometa.safetensors")
    r = run("merge", c, d, "-o", nometa)
    check("merge without metadata writes none", r.returncode == 0 and read_bytes(nometa)
          == canonical_bytes({"x": ("I8", [2], b"\xff\x01"), "y": ("I16", [1], b"\x01\x00")}),
          r.stderr)

    conflict = os.path.join(scratch, "conflict.safetensors")
    plain_file(conflict, {"other": ("U8", [1], b"\x00")}, {"format": "tf"})
    r = run("merge", a, conflict, "-o", os.path.join(scratch, "never1.safetensors"))
    msg = r.stderr
    check("merge names conflicting metadata", r.returncode == 1 and "format" in msg
          and "pt" in msg and "tf" in msg and a in msg and conflict in msg
          and not os.path.exists(os.path.join(scratch, "never1.safetensors")), msg)

    clash = os.path.join(scratch, "clash.safetensors")
    plain_file(clash, {"z.weight": ("F32", [1], f32(0.0))})
    r = run("merge", a, clash, "-o", os.path.join(scratch, "never2.safetensors"))
    msg = r.stderr
    check("merge names a duplicate tensor and both files", r.returncode == 1
          and "z.weight" in msg and a in msg and clash in msg, msg)

    before = read_bytes(a)
    r = run("merge", a, b, "-o", a)
    check("merge refuses to overwrite an input", r.returncode == 1
          and read_bytes(a) == before and "input" in r.stderr, r.stderr)


def check_get(scratch):
    path = os.path.join(scratch, "values.safetensors")
    tensors = {
        "f32": ("F32", [2, 2], f32(1.5, -2.25, 0.1, math.inf)),
        "bf16": ("BF16", [3], u16(0x3F80, 0xC0A0, 0x3E80)),
        "f16": ("F16", [3], struct.pack("<3e", 1.0, -0.5, 65504.0)),
        "f8": ("F8_E4M3", [5], bytes([0x7E, 0x38, 0x01, 0xFF, 0xB0])),
        "u64": ("U64", [3], struct.pack("<3Q", 2**64 - 1, 0, 12345678901234567890)),
        "i8": ("I8", [20], bytes(range(236, 256))),
    }
    plain_file(path, tensors)
    expected = {
        "f32": ("F32", "[2, 2]", "1.5, -2.25, 0.1, inf"),
        "bf16": ("BF16", "[3]", "1, -5, 0.25"),
        "f16": ("F16", "[3]", "1, -0.5, 65504"),
        "f8": ("F8_E4M3", "[5]", "448, 1, 0.001953125, nan, -0.5"),
        "u64": ("U64", "[3]", "18446744073709551615, 0, 12345678901234567890"),
    }
    for name, (dtype, shape, values) in expected.items():
        r = run("get", path, name)
        out = r.stdout
        nbytes = len(tensors[name][2])
        ok = (r.returncode == 0 and f"dtype:  {dtype}\n" in out and f"shape:  {shape}\n" in out
              and f"bytes:  {nbytes} " in out and f"values: [{values}]" in out)
        check(f"get decodes {dtype}", ok, out + r.stderr)

    r = run("get", path, "i8")
    shown = r.stdout.split("values: [")[1].split("]")[0].split(", ") if "values: [" in r.stdout else []
    check("get shows 16 values by default",
          shown[:16] == [str(v) for v in range(-20, -4)] and shown[16:] == ["..."], r.stdout)
    r = run("get", path, "i8", "-n", "3")
    check("get -n 3", "values: [-20, -19, -18, ...]  (3 of 20)" in r.stdout, r.stdout)
    r = run("get", path, "nope")
    check("get of a missing tensor exits 1", r.returncode == 1 and "nope" in r.stderr
          and r.stderr.startswith("safetensors: "), r.stderr)


# ---------------------------------------------------------------- sharded checkpoints

def expected_shards(tensors, limit):
    """transformers' rule over the canonical order: close a shard before a tensor that would
    make it exceed `limit` bytes of tensor data."""
    names = sorted(tensors, key=lambda n: (WRITE_ORDER.index(tensors[n][0]), n.encode("utf-8")))
    shards, size = [[]], 0
    for name in names:
        nbytes = len(tensors[name][2])
        if shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def check_shard(scratch):
    r = run("shard", "--help")
    check("shard --help exits 0", r.returncode == 0 and "index" in r.stdout, r.stdout + r.stderr)
    a_tensors = model_tensors()
    b_tensors = {"z.big": ("F32", [8], f32(*range(8))), "y.small": ("U8", [2], b"\x01\x02")}
    a = os.path.join(scratch, "shard-a.safetensors")
    b = os.path.join(scratch, "shard-b.safetensors")
    plain_file(a, a_tensors, {"format": "pt"}, reverse=True)
    plain_file(b, b_tensors, {"format": "pt", "source": "b"})
    union = {**a_tensors, **b_tensors}
    metadata = {"format": "pt", "source": "b"}
    out = os.path.join(scratch, "sharded")

    r = run("shard", a, b, "-o", out, "--max-shard-size", "32")
    check("shard exits 0", r.returncode == 0, r.stderr)
    layout = expected_shards(union, 32)
    count = len(layout)
    names = [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
    check("shard writes the expected files", count > 2 and sorted(os.listdir(out))
          == sorted(names + ["model.safetensors.index.json"]), repr(os.listdir(out)))
    shard_ok = all(read_bytes(os.path.join(out, name))
                   == canonical_bytes({t: union[t] for t in part}, metadata)
                   for name, part in zip(names, layout))
    check("each shard holds the canonical bytes of its tensors", shard_ok)
    index = {"metadata": {**metadata, "total_size": sum(len(v[2]) for v in union.values())},
             "weight_map": {t: name for name, part in zip(names, layout) for t in part}}
    index_path = os.path.join(out, "model.safetensors.index.json")
    expected_index = json.dumps(index, indent=2, sort_keys=True) + "\n"
    check("shard writes transformers' index", read_bytes(index_path).decode() == expected_index,
          read_bytes(index_path).decode())

    r = run("validate", out, index_path)
    check("validate a checkpoint directory and its index", r.returncode == 0
          and r.stdout == f"{out}: OK (7 tensors in {count} shards)\n"
          f"{index_path}: OK (7 tensors in {count} shards)\n", r.stdout + r.stderr)

    r = run("inspect", out)
    rows = {line.split()[0]: line for line in r.stdout.splitlines()
            if line.strip() and line.split()[0] in union}
    by_tensor = index["weight_map"]
    check("inspect a checkpoint shows each tensor's shard", r.returncode == 0
          and len(rows) == 7 and all(by_tensor[t] in rows[t] for t in union)
          and f"shards:      {count}" in r.stdout and "format: pt" in r.stdout,
          r.stdout + r.stderr)
    r = run("inspect", "--json", out)
    try:
        doc = json.loads(r.stdout)
        ok = ([s["file"] for s in doc["shards"]] == names
              and [s["tensors"] for s in doc["shards"]] == [len(p) for p in layout]
              and {t["name"]: t["shard"] for t in doc["tensors"]} == by_tensor
              and doc["metadata"] == metadata and doc["totals"]["tensors"] == 7)
        check("inspect --json lists the shards", ok, json.dumps(doc, indent=1))
    except (ValueError, KeyError) as e:
        check("inspect --json lists the shards", False, f"{e!r}: {r.stdout!r}")

    merged = os.path.join(scratch, "from-shards.safetensors")
    r = run("merge", out, "-o", merged)
    check("merge a checkpoint directory back into the canonical file", r.returncode == 0
          and read_bytes(merged) == canonical_bytes(union, metadata), r.stderr)
    merged_index = os.path.join(scratch, "from-index.safetensors")
    r = run("merge", index_path, "-o", merged_index)
    check("merge an index", r.returncode == 0 and read_bytes(merged_index) == read_bytes(merged),
          r.stderr)
    r = run("merge", out, a, "-o", os.path.join(scratch, "never-shard.safetensors"))
    check("merge names a tensor in a checkpoint and a file", r.returncode == 1
          and "embed.weight" in r.stderr and a in r.stderr, r.stderr)

    single = os.path.join(scratch, "single")
    r = run("shard", out, "-o", single, "--max-shard-size", "1GiB")
    check("shard into one file writes model.safetensors and no index", r.returncode == 0
          and os.listdir(single) == ["model.safetensors"]
          and read_bytes(os.path.join(single, "model.safetensors"))
          == canonical_bytes(union, metadata), r.stderr + repr(os.listdir(single)))

    r = run("shard", a, b, "-o", out, "--max-shard-size", "64")
    check("shard refuses to leave stale shards", r.returncode == 1
          and names[-1] in r.stderr and read_bytes(index_path).decode() == expected_index,
          r.stderr)
    r = run("shard", a, "-o", os.path.join(scratch, "never"), "--max-shard-size", "5XB")
    check("shard refuses a bad size", r.returncode == 2 and "5XB" in r.stderr, r.stderr)

    def edited_copy(label, edit):
        """A copy of the checkpoint whose index `edit(doc, target)` changed."""
        target = os.path.join(scratch, "edited-" + label.replace(" ", "-"))
        shutil.copytree(out, target)
        doc = json.loads(json.dumps(index))
        edit(doc, target)
        with open(os.path.join(target, "model.safetensors.index.json"), "w") as f:
            json.dump(doc, f, indent=2)
        return target

    def broken(label, edit, *expected):
        target = edited_copy(label, edit)
        r = run("validate", target)
        lines = r.stderr.splitlines()
        check(f"validate refuses a broken index: {label}", r.returncode == 1 and r.stdout == ""
              and len(lines) == 1 and lines[0].startswith(f"{target}: invalid_index: ")
              and all(part in lines[0] for part in expected), r.stderr)

    def add_ghost(doc, _):
        doc["weight_map"]["ghost"] = names[0]

    def add_twin(doc, target):
        plain_file(os.path.join(target, "twin.safetensors"), {"step": a_tensors["step"]})
        doc["weight_map"]["other"] = "twin.safetensors"

    def escape_dir(doc, _):
        doc["weight_map"]["step"] = "../" + by_tensor["step"]

    def wrong_total(doc, _):
        doc["metadata"]["total_size"] += 1

    def drop_entry(doc, _):
        del doc["weight_map"]["step"]

    total = index["metadata"]["total_size"]
    broken("missing tensor", add_ghost, "`ghost`", names[0], "no shard has it")
    broken("tensor in two shards", add_twin, "`step`", "twin.safetensors", by_tensor["step"],
           "in both")
    broken("parent shard name", escape_dir, "../" + by_tensor["step"], "leaves the directory")
    broken("unmapped tensor", drop_entry, "`step`", "does not map")

    # A total_size other than the tensors' bytes (mlx-lm writes the shards' file sizes) is
    # reported on the OK line and in the JSON, not refused.
    target = edited_copy("other total size", wrong_total)
    r = run("validate", target)
    check("validate accepts and reports an index total_size other than the tensors' bytes",
          r.returncode == 0 and r.stdout.startswith(f"{target}: OK (")
          and f"total_size is {total + 1}, the tensors hold {total} bytes" in r.stdout, r.stdout)
    r = run("validate", "--json", target)
    verdict = json.loads(r.stdout)[0] if r.returncode == 0 else {}
    check("validate --json gives both sizes", verdict.get("valid") is True
          and verdict.get("declared_total_size") == total + 1
          and verdict.get("tensor_bytes") == total, r.stdout + r.stderr)
    r = run("validate", "--json", out)
    check("validate --json says nothing of a right total_size",
          r.returncode == 0 and "declared_total_size" not in r.stdout, r.stdout)


# ---------------------------------------------------------------- scan, convert, cast, bench

HOSTILE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures",
                              "pickles", "make_hostile_pickles.py")


def hostile_fixtures(scratch):
    """Runs make_hostile_pickles.py into scratch/hostile (standard library only; it writes
    files and loads nothing). Returns the directory and the rows of its two manifests."""
    out = os.path.join(scratch, "hostile")
    subprocess.run([sys.executable, HOSTILE_SCRIPT, out], check=True)

    def rows(name):
        with open(os.path.join(out, name)) as f:
            return [line.split() for line in f if line.strip()]

    return out, rows("manifest.txt"), rows("convert.txt")


def npy_bytes(descr, shape, data):
    """A version 1.0 .npy file, written from the format's description."""
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        descr, "".join(f"{d}," for d in shape))
    header = header.encode("latin-1")
    header += b" " * ((-(10 + len(header) + 1)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def npz_file(path, arrays):
    import zipfile
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, (descr, shape, data) in arrays.items():
            z.writestr(name + ".npy", npy_bytes(descr, shape, data))


def check_subcommand_help(_scratch):
    bad = []
    for sub, word in [("scan", "allowlist"), ("convert", "PyTorch"), ("cast", "DTYPE"),
                      ("bench", "throughput"), ("shard", "index")]:
        r = run(sub, "--help")
        if r.returncode != 0 or word not in r.stdout or sub not in r.stdout:
            bad.append(f"{sub} --help: rc={r.returncode}\n{r.stdout}{r.stderr}")
    check("scan, convert, cast, bench and shard --help exit 0", not bad, "\n".join(bad))


def check_scan(scratch):
    hostile, manifest, _ = hostile_fixtures(scratch)
    verdicts = {row[0]: (row[1], row[2]) for row in manifest}
    status = {"clean": 0, "dangerous": 1, "unreadable": 2}

    def reports(text, path, verdict, culprit):
        """Whether scan's text report for one file gives its verdict and names its global."""
        lines = text.splitlines()
        if not lines or not lines[0].startswith(f"{path}: {verdict} ("):
            return False
        return culprit == "-" or any("NOT ALLOWED" in line and line.rstrip().endswith(culprit)
                                     for line in lines[1:])

    # All files in one run (a process each would take a minute under the sanitizers): one
    # report a file, in order, each with its verdict and its global.
    everything = [os.path.join(hostile, name) for name in sorted(verdicts)]
    r = run("scan", *everything)
    blocks, wrong = r.stdout.split("\n" + hostile + "/"), []
    for i, path in enumerate(everything):
        text = (hostile + "/" + blocks[i] if i else blocks[i]) if i < len(blocks) else ""
        verdict, culprit = verdicts[os.path.basename(path)]
        if not reports(text, path, verdict, culprit):
            wrong.append(text or f"{path}: no report")
    check(f"scan gives each of {len(verdicts)} hostile fixtures its verdict and names its global",
          r.returncode == 1 and len(blocks) == len(everything) and len(verdicts) > 700
          and not wrong, "\n".join(wrong[:5]))
    # Alone, a file's verdict is the exit status: every fixture but the dangerous globals (the
    # run above names those), and one of them from each kind of file.
    alone = [name for name in sorted(verdicts) if not name.startswith("global_")]
    alone += ["global_builtins.getattr.pkl", "global_os.system.pt", "global_os.system.legacy.pt"]
    wrong = []
    for name in alone:
        path = os.path.join(hostile, name)
        r = run("scan", path)
        verdict, culprit = verdicts[name]
        if r.returncode != status[verdict] or not reports(r.stdout, path, verdict, culprit):
            wrong.append(f"{name}: rc={r.returncode}\n{r.stdout}{r.stderr}")
    check(f"scan of each of {len(alone)} files alone exits with its verdict", not wrong,
          "\n".join(wrong[:5]))

    clean = os.path.join(hostile, "benign.pkl")
    r = run("scan", clean)
    check("scan of a clean pickle exits 0 and reports clean",
          r.returncode == 0 and r.stdout.startswith(f"{clean}: clean (pickle)\n")
          and "NOT ALLOWED" not in r.stdout and r.stderr == "", r.stdout + r.stderr)
    evil = os.path.join(hostile, "os_system.pkl")
    r = run("scan", evil)
    check("scan of os.system exits 1, names it and its offset",
          r.returncode == 1 and r.stdout.startswith(f"{evil}: dangerous (pickle)\n")
          and "  global   @ 2  NOT ALLOWED  os.system\n" in r.stdout and "DANGEROUS" in r.stdout,
          r.stdout + r.stderr)
    garbage = os.path.join(hostile, "garbage.bin")
    r = run("scan", clean, garbage)
    check("scan: unreadable and nothing dangerous exits 2", r.returncode == 2, r.stdout)
    r = run("scan", clean, garbage, evil)
    check("scan: anything dangerous exits 1", r.returncode == 1, r.stdout)

    r = run("scan", "--json", *everything)
    try:
        doc = json.loads(r.stdout)
        by_file = {os.path.basename(d["file"]): d for d in doc}
        named = all(any(not g["allowed"] and g["module"] + "." + g["name"] == culprit
                        for g in by_file[name]["globals"])
                    for name, (_, culprit) in verdicts.items() if culprit != "-")
        ok = (r.returncode == 1 and len(doc) == len(everything) and named
              and all(by_file[n]["verdict"] == v for n, (v, _) in verdicts.items()))
        check("scan --json reports every file, verdict and global", ok, r.stdout[:2000])
    except (ValueError, KeyError, TypeError) as e:
        check("scan --json reports every file, verdict and global", False,
              f"{e!r} {r.stdout[:500]!r}")


def check_convert(scratch):
    hostile, _, refused = hostile_fixtures(scratch)
    # One global of each module, in each kind of checkpoint (convert_test.cpp converts them
    # all; a process each would take a minute under the sanitizers).
    modules = {}
    for name, culprit in refused:
        modules.setdefault((culprit.rpartition(".")[0], name.endswith(".legacy.pt")), name)
    sample = [(name, culprit) for name, culprit in refused if name in modules.values()]
    wrong = []
    for name, culprit in sample:
        out_dir = os.path.join(scratch, "refused-" + name)
        os.makedirs(out_dir)
        out = os.path.join(out_dir, "out.safetensors")
        r = run("convert", os.path.join(hostile, name), out)
        if (r.returncode != 1 or f"`{culprit}`" not in r.stderr or r.stdout != ""
                or os.listdir(out_dir)):
            wrong.append(f"{name}: rc={r.returncode} {r.stderr!r} {os.listdir(out_dir)}")
    check(f"convert refuses {len(sample)} dangerous globals (of {len(refused)}), naming each, "
          "writing nothing", len(sample) > 100 and not wrong, "\n".join(wrong[:5]))

    npz = os.path.join(scratch, "arrays.npz")
    arrays = {"weight": ("<f4", [2, 2], f32(1.0, -2.0, 0.5, 8.0)),
              "ids": ("<i8", [3], struct.pack("<3q", 7, -1, 2**40)),
              "mask": ("|b1", [2], b"\x01\x00")}
    npz_file(npz, arrays)
    expected = canonical_bytes({"weight": ("F32", [2, 2], arrays["weight"][2]),
                                "ids": ("I64", [3], arrays["ids"][2]),
                                "mask": ("BOOL", [2], arrays["mask"][2])}, {"format": "np"})
    out = os.path.join(scratch, "arrays.safetensors")
    r = run("convert", npz, out)
    check("convert of an .npz exits 0 and writes the canonical file",
          r.returncode == 0 and read_bytes(out) == expected
          and r.stdout.startswith(f"Converted 3 tensors (") and f"from npz to {out}" in r.stdout,
          r.stdout + r.stderr)
    os.remove(out)
    r = run("convert", "--json", npz)  # OUT defaults to IN with .safetensors
    try:
        doc = json.loads(r.stdout)
        ok = (r.returncode == 0 and doc["input_format"] == "npz" and doc["outputs"] == [out]
              and sorted(doc["converted"]) == ["ids", "mask", "weight"]
              and doc["bytes"] == len(expected) and read_bytes(out) == expected)
        check("convert --json reports the conversion", ok, r.stdout + r.stderr)
    except (ValueError, KeyError) as e:
        check("convert --json reports the conversion", False, f"{e!r} {r.stdout!r} {r.stderr!r}")
    r = run("convert", npz, npz)
    check("convert refuses to replace its input", r.returncode == 1 and "replace" in r.stderr
          and os.path.getsize(npz) > 0, r.stderr)
    model_dir = os.path.join(scratch, "hostile-model")
    os.makedirs(model_dir)
    shutil.copy(os.path.join(hostile, "global_os.system.pt"),
                os.path.join(model_dir, "pytorch_model.bin"))
    r = run("convert", model_dir)
    check("convert of a model directory refuses its dangerous pytorch_model.bin",
          r.returncode == 1 and "`os.system`" in r.stderr
          and os.listdir(model_dir) == ["pytorch_model.bin"],
          r.stderr + repr(os.listdir(model_dir)))
    r = run("convert", model_dir, os.path.join(scratch, "never.safetensors"))
    check("convert of a directory takes no OUT", r.returncode == 1 and "in place" in r.stderr
          and os.listdir(model_dir) == ["pytorch_model.bin"], r.stderr)
    r = run("convert", os.path.join(scratch, "none.pt"), os.path.join(scratch, "none.safetensors"))
    check("convert of a missing file exits 1", r.returncode == 1
          and r.stderr.startswith("safetensors: ")
          and not os.path.exists(os.path.join(scratch, "none.safetensors")), r.stderr)


def check_cast(scratch):
    source = os.path.join(scratch, "cast-in.safetensors")
    values = (1.0, -2.5, 65504.0, 0.1)
    tensors = {"w": ("F32", [2, 2], f32(*values)), "ids": ("I32", [2], struct.pack("<2i", 3, -4)),
               "h": ("F16", [1], struct.pack("<e", 0.5))}
    plain_file(source, tensors, {"format": "pt"})
    out = os.path.join(scratch, "cast-out.safetensors")
    r = run("cast", source, out, "--dtype", "f16")
    expected = canonical_bytes({"w": ("F16", [2, 2], struct.pack("<4e", *values)),
                                "ids": tensors["ids"], "h": tensors["h"]}, {"format": "pt"})
    check("cast --dtype f16 converts the F32 tensor and copies the rest",
          r.returncode == 0 and read_bytes(out) == expected
          and r.stdout == f"{out}: 3 tensors, 1 converted to F16, 26 B -> 18 B\n",
          r.stdout + r.stderr + repr(read_bytes(out)[:200]))
    bf16 = os.path.join(scratch, "cast-bf16.safetensors")
    r = run("cast", source, bf16, "--dtype", "BFloat16")
    # bf16 is the top half of the f32 bits, rounded to nearest even; these values are exact.
    exact = (1.0, -2.5, 65536.0, 0.0)
    ok = r.returncode == 0
    if ok:
        got = read_bytes(bf16)
        header_len = struct.unpack("<Q", got[:8])[0]
        header = json.loads(got[8:8 + header_len])
        ok = header["w"]["dtype"] == "BF16" and header["h"]["dtype"] == "BF16"
        w_begin, w_end = header["w"]["data_offsets"]
        w = got[8 + header_len + w_begin:8 + header_len + w_end]
        top = [struct.unpack("<f", b"\x00\x00" + w[i:i + 2])[0] for i in range(0, 8, 2)]
        ok = ok and top[:3] == list(exact[:3])
    check("cast accepts a dtype alias in any case", ok, r.stdout + r.stderr)
    r = run("cast", source, os.path.join(scratch, "never.safetensors"), "--dtype", "i8")
    check("cast to a non-float dtype is a usage error", r.returncode == 2 and "i8" in r.stderr
          and not os.path.exists(os.path.join(scratch, "never.safetensors")), r.stderr)
    before = read_bytes(source)
    r = run("cast", source, source, "--dtype", "f16")
    check("cast refuses to replace its input", r.returncode == 1 and "replace" in r.stderr
          and read_bytes(source) == before, r.stderr)


def check_bench(scratch):
    path = os.path.join(scratch, "bench.safetensors")
    plain_file(path, {"a": ("F32", [256], f32(*range(256))), "b": ("U8", [100], bytes(100))})
    r = run("bench", path, "--threads", "1,2", "--repeat", "1", "--no-cold",
            "--methods", "pread,mmap")
    rows = {tuple(line.split()[:2]) for line in r.stdout.splitlines() if line.split()}
    check("bench smoke run exits 0 with a row per method and thread count",
          r.returncode == 0 and r.stdout.startswith(f"{path}: 2 tensors in 1 file, 1.1 KiB")
          and "memcpy (1 thread)" in r.stdout and "sequential read(2), warm" in r.stdout
          and {("pread", "1"), ("pread", "2"), ("mmap", "1"), ("mmap", "2"),
               ("mapped", "1"), ("mapped", "2"), ("owned", "1"), ("owned", "2")} <= rows
          and "cold cache: not measured (--no-cold)" in r.stdout, r.stdout + r.stderr)
    r = run("bench", path, "--dtype", "f16", "--threads", "1", "--repeat", "1", "--no-cold",
            "--methods", "auto")
    check("bench --dtype f16", r.returncode == 0 and "loading as F16" in r.stdout
          and any(line.split()[:2] == ["auto", "1"] for line in r.stdout.splitlines()
                  if line.split()), r.stdout + r.stderr)
    empty = os.path.join(scratch, "bench-empty.safetensors")
    plain_file(empty, {"e": ("F32", [0], b"")})
    r = run("bench", empty, "--no-cold")
    check("bench of a file without data exits 1", r.returncode == 1
          and "holds no tensor data" in r.stderr, r.stderr)
    for args in (["--threads", "0"], ["--methods", "teleport"]):
        r = run("bench", path, "--no-cold", "--repeat", "1", *args)
        check(f"bench refuses {args}", r.returncode == 1 and args[1] in r.stderr, r.stderr)


# ---------------------------------------------------------------- help, --json and progress

SUBCOMMANDS = [
    "inspect", "validate", "merge", "get", "shard", "scan", "convert", "cast", "bench", "plan"]


def check_help_one_line_each(_scratch):
    """`safetensors --help` lists one short line per subcommand, as git does."""
    lines = run("--help").stdout.splitlines()
    start = lines.index("Subcommands:") + 1 if "Subcommands:" in lines else len(lines)
    listing = []
    for line in lines[start:]:
        if not line.strip():
            break
        listing.append(line)
    names = [line.split()[0] for line in listing]
    check("--help lists exactly one line per subcommand", names == SUBCOMMANDS,
          "\n".join(lines))
    long_lines = [line for line in listing if len(line) >= 80]
    check("--help subcommand lines are shorter than 80 columns", not long_lines,
          "\n".join(long_lines))
    bad = []
    for sub, line in zip(names, listing):
        summary = line[len(line) - len(line.lstrip()):].split(None, 1)[1]
        r = run(sub, "--help")
        text = r.stdout
        if (r.returncode != 0 or not text.startswith(summary + "\n\n")
                or len(text.split("Usage:")[0]) < 2 * len(summary)
                or any(len(row) >= 80 for row in text.split("Usage:")[0].splitlines())):
            bad.append(f"{sub}: {text[:300]!r}")
    check("SUB --help starts with the summary and keeps the details, wrapped", not bad,
          "\n".join(bad))


def run_json(*args):
    """Runs a subcommand with --json; (exit status, parsed document or None, raw output)."""
    r = run(*args, "--json")
    try:
        return r.returncode, json.loads(r.stdout), r.stdout + r.stderr
    except ValueError:
        return r.returncode, None, r.stdout + r.stderr


def check_json_outputs(scratch):
    path = os.path.join(scratch, "j.safetensors")
    plain_file(path, {"w": ("F32", [2, 2], f32(1.5, float("nan"), float("-inf"), 2.0)),
                      'odd "name"\n': ("U16", [3], u16(1, 2, 3)),
                      "flag": ("BOOL", [2], b"\x01\x00")}, {"format": "pt"})
    missing = os.path.join(scratch, "j-missing.safetensors")

    rc, doc, out = run_json("validate", path, missing)
    check("validate --json", rc == 1 and doc == [
        {"file": path, "valid": True, "tensors": 3},
        {"file": missing, "valid": False, "error": "io",
         "message": doc[1].get("message") if doc and len(doc) > 1 else None}]
        and "cannot open" in doc[1]["message"], out)

    rc, doc, out = run_json("get", path, "w", "-n", "3")
    check("get --json holds the description and the first values", rc == 0 and doc == {
        "file": path, "name": "w", "dtype": "F32", "shape": [2, 2],
        "data_offsets": doc.get("data_offsets") if doc else None, "bytes": 16, "elements": 4,
        "values": [1.5, "nan", "-inf"]} and doc["data_offsets"][1] - doc["data_offsets"][0] == 16,
        out)
    rc, doc, out = run_json("get", path, 'odd "name"\n')
    check("get --json escapes names, BOOL values are booleans",
          rc == 0 and doc["name"] == 'odd "name"\n' and doc["values"] == [1, 2, 3], out)
    rc, doc, out = run_json("get", path, "flag")
    check("get --json of BOOL", rc == 0 and doc["values"] == [True, False], out)

    merged = os.path.join(scratch, "j-merged.safetensors")
    rc, doc, out = run_json("merge", path, "-o", merged)
    check("merge --json", rc == 0 and doc == {"output": merged, "tensors": 3, "files": 1,
                                              "bytes": 24}, out)

    shards = os.path.join(scratch, "j-shards")
    rc, doc, out = run_json("shard", path, "-o", shards, "--max-shard-size", "16")
    check("shard --json", rc == 0 and doc["output"] == shards and doc["shards"] == 2
          and doc["tensors"] == 3 and doc["bytes"] == 24 and len(doc["files"]) == 3
          and doc["files"][-1].endswith("model.safetensors.index.json")
          and all(os.path.exists(f) for f in doc["files"]), out)

    cast = os.path.join(scratch, "j-cast.safetensors")
    rc, doc, out = run_json("cast", path, cast, "--dtype", "bf16")
    check("cast --json", rc == 0 and doc == {"output": cast, "dtype": "BF16", "tensors": 3,
                                             "converted": 1, "bytes_in": 24, "bytes_out": 16},
          out)

    rc, doc, out = run_json("bench", path, "--threads", "1", "--repeat", "1", "--no-cold",
                            "--methods", "pread")
    rows = [(row["method"], row["threads"]) for row in doc["rows"]] if doc else []
    check("bench --json", rc == 0 and doc["file"] == path and doc["bytes"] == 24
          and doc["dtype"] is None and doc["cold_read_gbps"] is None
          and doc["memcpy_gbps"] > 0 and rows == [("pread", 1), ("mapped", 1), ("owned", 1)]
          and all(row["warm_gbps"] > 0 and row["cold_gbps"] is None
                  and row["cold_read_gbps"] is None for row in doc["rows"]),
          out)


def run_on_terminal(*args):
    """Runs the command with stderr on a pseudo-terminal; (exit status, stdout, terminal)."""
    import pty
    master, slave = pty.openpty()
    proc = subprocess.Popen([BIN, *args], stdout=subprocess.PIPE, stderr=slave,
                            stdin=subprocess.DEVNULL)
    os.close(slave)
    screen = b""
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the command closed the terminal's last writer
            break
        if not data:
            break
        screen += data
    out = proc.stdout.read()
    proc.wait()
    os.close(master)
    return proc.returncode, out.decode(), screen.decode(errors="replace")


def check_progress(scratch):
    path = os.path.join(scratch, "p.safetensors")
    plain_file(path, {"w": ("F32", [4], f32(1, 2, 3, 4))})
    npy = os.path.join(scratch, "p.npy")
    with open(npy, "wb") as f:
        f.write(npy_bytes("<f4", [4], f32(1, 2, 3, 4)))
    out = lambda name: os.path.join(scratch, name)  # noqa: E731
    cases = [("merging", ["merge", path, "-o", out("p-m.safetensors")]),
             ("sharding", ["shard", path, "-o", out("p-shards")]),
             ("casting", ["cast", path, out("p-c.safetensors"), "--dtype", "f16"]),
             ("validating", ["validate", path, path]),
             ("converting", ["convert", npy, out("p-conv.safetensors")]),
             ("bench:", ["bench", path, "--threads", "1", "--repeat", "1", "--no-cold",
                         "--methods", "pread"])]
    shown, quiet = [], []
    for label, args in cases:
        rc, stdout, screen = run_on_terminal(*args)
        # Drawn, then erased: the screen's last line ends blank after a carriage return.
        erased = screen.rstrip(" ").endswith("\r") and label not in screen.split("\r")[-2]
        if rc != 0 or label not in screen or not erased or "%" in stdout:
            shown.append(f"{args[0]}: rc={rc} screen={screen!r} stdout={stdout!r}")
        r = run(*args)
        if r.returncode != 0 or r.stderr:
            quiet.append(f"{args[0]}: rc={r.returncode} stderr={r.stderr!r}")
    check("progress is drawn and erased on a terminal", not shown, "\n".join(shown))
    check("progress stays out of a pipe", not quiet, "\n".join(quiet))


def check_plan(scratch):
    """`safetensors plan`: modules to devices in order under budgets, from the header."""
    path = os.path.join(scratch, "plan.safetensors")
    entries, data = [], b""
    names = ["model.embed.weight"] + [f"model.layers.{i}.w" for i in (0, 1, 2, 10)]
    for name in names:  # F32 [4, 4]: 64 bytes each
        entries.append(f'"{name}":' + entry_json("F32", [4, 4], len(data), len(data) + 64))
        data += bytes(64)
    raw_file(path, "{" + ",".join(entries) + "}", data)
    status, doc, output = run_json("plan", path, "--max-memory", "cpu=150,cuda:0=64B",
                                   "--no-split", "model.layers.*")
    check("plan --json exits 0", status == 0 and doc is not None, output)
    if doc:
        placed = {m["module"]: m["device"] for m in doc["device_map"]}
        check("plan fills the GPU first, then cpu, then disk, layers in natural order",
              placed == {"model.embed": "cuda:0", "model.layers.0": "cpu",
                         "model.layers.1": "cpu", "model.layers.2": "disk",
                         "model.layers.10": "disk"}, output)
        check("plan --json gives bytes per device",
              doc["devices"] == [{"device": "cuda:0", "bytes": 64}, {"device": "cpu", "bytes": 128},
                                 {"device": "disk", "bytes": 128}], output)
    r = run("plan", path, "--max-memory", "cpu=1GiB", "--dtype", "bf16")
    check("plan prints bytes per device at the dtype", r.returncode == 0
          and "cpu: 160 B" in r.stdout, r.stdout + r.stderr)
    r = run("plan", path, "--max-memory", "cpu")
    check("plan refuses a budget without a size", r.returncode != 0
          and "DEVICE=SIZE" in r.stderr, r.stdout + r.stderr)


SUBCOMMAND_GROUPS = (check_subcommand_help, check_scan, check_convert, check_cast, check_bench,
                     check_help_one_line_each, check_json_outputs,
                     check_progress, check_plan)


def main():
    os.makedirs(SCRATCH_ROOT, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="cli-", dir=SCRATCH_ROOT)
    try:
        for group in (check_help_and_usage, check_inspect, check_validate, check_merge,
                      check_get, check_shard) + SUBCOMMAND_GROUPS:
            try:
                group(scratch)
            except Exception as e:  # a crash in one group must not hide the others
                check(f"{group.__name__} ran to the end", False, repr(e))
    finally:
        if failed == 0:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"cli: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
