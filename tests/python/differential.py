"""Shared pieces of the differential tests (test_differential_*.py) against the reference 0.8.

Every property runs `EXAMPLES` examples (1,000 by default; set SAFETENSORS_HYPOTHESIS_EXAMPLES
for long runs), derandomized so that CI sees the same examples each time. Setting
SAFETENSORS_HYPOTHESIS_SEED switches to random examples drawn from that seed, for long runs
that explore beyond the fixed set (the seed is printed with any failure).
"""

import json
import math
import os
import struct

from hypothesis import HealthCheck, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("SAFETENSORS_HYPOTHESIS_EXAMPLES", "1000"))
SEED = os.environ.get("SAFETENSORS_HYPOTHESIS_SEED")


def prop(examples=EXAMPLES):
    """Decorator: the suite's hypothesis settings (seeded, no deadline, no database)."""
    configured = settings(max_examples=examples, derandomize=SEED is None, database=None,
                          deadline=None, print_blob=True,
                          suppress_health_check=list(HealthCheck))

    def wrap(test):
        test = configured(test)
        return hypothesis_seed(int(SEED))(test) if SEED is not None else test

    return wrap


# Tensor names and metadata: any Unicode but lone surrogates (not encodable), NUL included
# (both packages refuse it), and the special header key.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
NAMES = st.one_of(TEXT, st.sampled_from(["a", "b", "weight", "", "é", "__metadata__"]))
METADATA = st.one_of(st.none(), st.dictionaries(TEXT, TEXT, max_size=3))
SHAPES = st.lists(st.integers(0, 4), max_size=4)


def draw_torch_tensor(draw, dtype, shape):
    """A torch tensor of `dtype` and `shape` made of bytes hypothesis draws (bools as 0/1)."""
    import torch

    size = math.prod(shape) * dtype.itemsize
    raw = bytearray(draw(st.binary(min_size=size, max_size=size)))
    if dtype == torch.bool:
        raw = bytearray(b & 1 for b in raw)
    flat = (torch.frombuffer(raw, dtype=torch.uint8) if size
            else torch.empty(0, dtype=torch.uint8))
    return flat.view(dtype).reshape(shape)


def split_metadata(blob):
    """(header text with the __metadata__ object cut out, its (key, value) pairs in file order
    or None, the data after the header)."""
    (n,) = struct.unpack("<Q", blob[:8])
    text = blob[8:8 + n].decode("utf-8")
    prefix = '{"__metadata__":'
    if not text.startswith(prefix):
        return text, None, blob[8 + n:]
    metadata, end = json.JSONDecoder(object_pairs_hook=list).raw_decode(text, len(prefix))
    return text[:len(prefix)] + text[end:], metadata, blob[8 + n:]


def same_error(ours, ref):
    """Whether two exceptions are of the same kind: both SafetensorError (each package has its
    own class) or the same built-in type."""
    if type(ours).__name__ == type(ref).__name__ == "SafetensorError":
        return True
    return type(ours) is type(ref)


def outcome(call):
    """("ok", value) or ("error", exception) of call(). A panic of the reference's Rust code
    (pyo3's PanicException, a BaseException) counts as an error too; nothing else that is not
    an Exception (KeyboardInterrupt, SystemExit) is caught."""
    try:
        return "ok", call()
    except Exception as error:  # noqa: BLE001 - the type is the point
        return "error", error
    except BaseException as error:
        if type(error).__name__ != "PanicException":
            raise
        return "error", error
