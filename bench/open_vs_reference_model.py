#!/usr/bin/python3
"""Opening a 200,000-tensor checkpoint: our `safe_open` against a model of the reference's open.

The reference package cannot be installed here (no PyPI, no crates.io), so the baseline is
bench/reference_open_model: a small Rust program, built offline from Debian's serde and
serde_json crates, that opens a file the way the reference crate is documented to (serde_json
into a flattened map of name -> {dtype, shape, data_offsets} beside "__metadata__", a vector
sorted by offsets, a name index, the offset and size checks). It is a model, not the reference:
treat the ratio as an estimate. Our side is the Python package (interpreter overhead included),
timed around `safe_open(...)` and around `keys()`.

    /usr/bin/python3 bench/open_vs_reference_model.py BUILD_DIR [--repeat 9] [--tensors 200000]

Needs cargo and Debian's librust-serde-json-dev and librust-serde-derive-dev.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LAYER = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
         "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
         "mlp.down_proj.weight", "input_layernorm.weight")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("build_dir")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--tensors", type=int, default=200000)
    args = parser.parse_args()
    sys.path.insert(0, os.path.join(os.path.abspath(args.build_dir), "python"))
    import numpy as np
    from libsafetensors import safe_open
    from libsafetensors.numpy import save_file

    model_dir = os.path.join(HERE, "reference_open_model")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=model_dir, check=True)
    model = os.path.join(model_dir, "target", "release", "reference_open_model")

    with tempfile.TemporaryDirectory(prefix="open-bench-") as scratch:
        path = os.path.join(scratch, "many.safetensors")
        # Mixed dtypes, as in real checkpoints (norms in F32), so names are not already in
        # data order and the parsers have to sort.
        tensors = {}
        for i in range(args.tensors // len(LAYER)):
            for name in LAYER:
                dtype = np.float32 if name.endswith("layernorm.weight") else np.float16
                tensors["model.layers.%d.%s" % (i, name)] = np.zeros((4,), dtype=dtype)
        save_file(tensors, path)
        del tensors

        opens, keys = [], []
        for _ in range(args.repeat):
            start = time.perf_counter()
            with safe_open(path, framework="np") as f:
                opened = time.perf_counter()
                names = f.keys()
                keys.append(time.perf_counter() - opened)
            opens.append(opened - start)
        assert len(names) == len(LAYER) * (args.tensors // len(LAYER))
        best, median = (float(x) for x in subprocess.run(
            [model, path, str(args.repeat)], check=True, stdout=subprocess.PIPE,
            text=True).stdout.split("\n")[0].split())
        size = os.path.getsize(path)

    ours = min(opens)
    print("%d tensors, %.1f MB header; best of %d" % (len(names), size / 1e6, args.repeat))
    print("| | seconds | x model |")
    print("|---|---:|---:|")
    print("| reference model: read + serde_json + sort + index + checks | %.4f | 1.0 |" % best)
    print("| libsafetensors `safe_open` (Python) | %.4f | %.2f |" % (ours, ours / best))
    print("| ... then `keys()` | %.4f | |" % min(keys))
    print("target (at most half the reference's time): %s against the model" %
          ("met" if ours <= best / 2 else "NOT met"))


if __name__ == "__main__":
    main()
