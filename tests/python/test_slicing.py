"""get_slice against numpy's own slicing, on every backend and framework, and its errors."""

import random

import numpy as np
import pytest
import torch

from libsafetensors import SafetensorError, safe_open
from libsafetensors.numpy import save_file

SHAPE = (5, 4, 6)
ARRAY = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
SETUPS = [(backend, framework) for backend in ("mmap", "pread") for framework in ("np", "pt")]

FIXED_KEYS = [
    (), slice(None), 0, -1, (1, 2, 3), (-5, -4, -6), (slice(1, 4), 2), (Ellipsis, 1),
    (0, Ellipsis), (1, Ellipsis, slice(2, 5)), (slice(None, None, 2),),
    (slice(None), slice(1, None, 2), slice(None, None, 3)), (slice(-3, None), slice(-1, None)),
    (slice(4, 1),), (slice(6, None),), (Ellipsis,), (slice(1, 3), Ellipsis, 0),
    (np.int64(2), slice(np.int32(1), 3)),
]  # fmt: skip


def random_bound(size):
    return random.choice([None, random.randint(-size, size)])


def random_key(rng_seed):
    random.seed(rng_seed)
    key = []
    for size in SHAPE[: random.randint(0, len(SHAPE))]:
        if random.random() < 0.3:
            key.append(random.randint(-size, size - 1))
        else:
            step = random.choice([None, 1, 2, 3, 5])
            key.append(slice(random_bound(size), random_bound(size), step))
    return tuple(key)


def starts_past_end(key):
    """Whether `key` has a slice starting at or after the end of its dimension, which the
    reference (and so framework "np") refuses."""
    items = list(key) if isinstance(key, tuple) else [key]
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items[at:at + 1] = [slice(None)] * (len(SHAPE) - len(items) + 1)
    return any(isinstance(item, slice) and item.indices(size)[0] >= size
               for item, size in zip(items, SHAPE))


def expect(sliced, key, framework):
    if framework == "np" and starts_past_end(key):
        with pytest.raises(SafetensorError, match="out of bounds"):
            sliced[key]
        return
    expected = ARRAY[key]
    got = as_numpy(sliced[key])
    assert got.shape == expected.shape, key
    np.testing.assert_array_equal(got, expected, err_msg=str(key))


def as_numpy(result):
    return result.numpy() if isinstance(result, torch.Tensor) else result


@pytest.fixture(scope="module")
def file(tmp_path_factory):
    name = str(tmp_path_factory.mktemp("slicing") / "a.safetensors")
    save_file({"a": ARRAY}, name)
    return name


@pytest.mark.parametrize("backend,framework", SETUPS)
def test_fixed_keys_match_numpy(file, backend, framework):
    with safe_open(file, framework=framework, backend=backend) as f:
        sliced = f.get_slice("a")
        assert sliced.get_shape() == list(SHAPE) and sliced.get_dtype() == "F32"
        for key in FIXED_KEYS:
            expect(sliced, key, framework)


@pytest.mark.parametrize("backend,framework", SETUPS)
def test_random_keys_match_numpy(file, backend, framework):
    with safe_open(file, framework=framework, backend=backend) as f:
        sliced = f.get_slice("a")
        for seed in range(300):
            expect(sliced, random_key(seed), framework)


def test_empty_list_selects_nothing(file):
    with safe_open(file, framework="np") as f:
        assert f.get_slice("a")[[]].shape == (0, 4, 6)


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_errors_are_the_reference_ones(file, backend, framework="np"):
    with safe_open(file, framework=framework, backend=backend) as f:
        sliced = f.get_slice("a")
        cases = [
            ((slice(2, None), -5), "Invalid index -5 for dimension 1 of size 4"),
            # The wording of release 0.8, where the errors are displayed rather than debugged.
            ((slice(2, None), 4), "Error during slicing [2:, 4] with shape [5, 4, 6]: index 4 "
                                  "out of bounds for tensor dimension #1 of size 4"),
            (slice(None, 9), "Error during slicing [:9] with shape [5, 4, 6]: index 8 out of "
                             "bounds for tensor dimension #0 of size 5"),
            ((slice(None), slice(None, 7)), "Error during slicing [:, :7] with shape [5, 4, 6]: "
                                            "index 6 out of bounds for tensor dimension #1 of "
                                            "size 4"),
            ((0, 0, 0, 0), "Error during slicing [0, 0, 0, 0] with shape [5, 4, 6]: more "
                           "slicing indexes than dimensions in tensor"),
        ]  # fmt: skip
        for key, message in cases:
            with pytest.raises(SafetensorError) as error:
                sliced[key]
            assert str(error.value) == message
        with pytest.raises(SafetensorError, match="Non empty lists are not implemented"):
            sliced[[0, 1]]
        with pytest.raises(SafetensorError, match="single ellipsis"):
            sliced[..., 0, ...]
        for step in (-1, 0):
            with pytest.raises(SafetensorError, match=f"positive integer, got {step}"):
                sliced[::step]
        with pytest.raises(SafetensorError, match="Unsupported slice index 0.5 at position 0"):
            sliced[0.5]


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_torch_slices_index_as_torch_does(file, backend):
    # The reference 0.8 indexes torch tensors with torch's rules: bounds clamp, IndexError
    # for an index out of range, None and lists allowed.
    whole = torch.from_numpy(ARRAY)
    with safe_open(file, framework="pt", backend=backend) as f:
        sliced = f.get_slice("a")
        for key in [(slice(None), slice(5, 9)), slice(-10, 10), (None, 1), [0, 2], (0, [1, 3]),
                    (Ellipsis, Ellipsis), slice(1 << 70, None)]:
            assert torch.equal(sliced[key], whole[key]), key
        for key, error in [(5, IndexError), (-6, IndexError), ((0, 0, 0, 0), IndexError),
                           (slice(None, None, -1), ValueError), (slice(None, None, 0), ValueError),
                           (0.5, IndexError)]:
            with pytest.raises(error):
                whole[key]
            with pytest.raises(error):
                sliced[key]
        with pytest.raises(SafetensorError, match="booleans are not indexes"):
            sliced[True]
