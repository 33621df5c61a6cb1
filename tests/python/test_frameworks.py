"""The framework helpers built on numpy: libsafetensors.flax (with jax, in the test
requirements), .tensorflow, .mlx and .paddle (when installed; skipped with the reason
otherwise),
against the reference's modules of the same names where it is installed, and their aliases
under install_as_safetensors."""

import subprocess
import sys
import textwrap

import os

import numpy as np
import pytest

import libsafetensors
from libsafetensors import SafetensorError

# Where libsafetensors is imported from, for the fresh interpreters (torch-free, unlike
# clients_support's, so that this file also runs where only paddle or tensorflow is).
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(libsafetensors.__file__)))


def bits(array):
    """An array's dtype, shape and bytes: equal only for bit-identical arrays."""
    array = np.asarray(array)
    return str(array.dtype), array.shape, array.tobytes()


def run(script, cwd):
    """`script` in a fresh interpreter that imports ours and the reference side by side
    (without the suite's alias package, which makes `safetensors` ours)."""
    env = {"PYTHONPATH": PACKAGE_PARENT, "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=str(cwd),
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# --------------------------------------------------------------------------- flax (jax)

@pytest.fixture
def jnp():
    pytest.importorskip("jax")
    import jax.numpy

    return jax.numpy


def jax_arrays(jnp):
    return {
        "f32": jnp.arange(6, dtype=jnp.float32).reshape(2, 3),
        "f16": jnp.array([1.5, -0.0, 65504.0], dtype=jnp.float16),
        "bf16": jnp.array([1.5, -2.25, 3.0e38], dtype=jnp.bfloat16),
        "f8_e4m3": jnp.array([1.0, -0.5, 448.0], dtype=jnp.float8_e4m3fn),
        "f8_e5m2": jnp.array([1.0, -0.5, 57344.0], dtype=jnp.float8_e5m2),
        "i8": jnp.array([-128, 127], dtype=jnp.int8),
        "u8": jnp.array([0, 255], dtype=jnp.uint8),
        "i32": jnp.array([[-(2 ** 31), 2 ** 31 - 1]], dtype=jnp.int32),
        "bool": jnp.array([True, False, True]),
        "empty": jnp.zeros((0, 3), dtype=jnp.float32),
        "scalar": jnp.array(3.25, dtype=jnp.float32),
    }


def test_flax_round_trip_keeps_every_dtype_bit_for_bit(jnp, path):
    from jax import Array

    from libsafetensors import flax

    arrays = jax_arrays(jnp)
    flax.save_file(arrays, path, metadata={"framework": "flax"})
    for loaded in (flax.load_file(path), flax.load_file(path, backend="pread"),
                   flax.load(flax.save(arrays))):
        assert set(loaded) == set(arrays)
        for name, array in arrays.items():
            assert isinstance(loaded[name], Array), name
            assert bits(loaded[name]) == bits(array), name


def test_flax_save_leaves_the_callers_dict_alone(jnp, path):
    from libsafetensors import flax

    arrays = jax_arrays(jnp)
    before = dict(arrays)
    flax.save(arrays)
    flax.save_file(arrays, path)
    assert all(arrays[name] is before[name] for name in before)


def test_flax_refuses_what_is_not_an_array_and_keeps_the_old_file(jnp, path):
    from libsafetensors import flax

    flax.save_file({"a": jnp.ones(3)}, path)
    with open(path, "rb") as f:
        good = f.read()
    with pytest.raises(ValueError, match=r"Key `b` is invalid, expected jax.Array but received "
                                         r"<class 'list'>"):
        flax.save_file({"a": jnp.zeros(2), "b": [1.0, 2.0]}, path)
    with pytest.raises(ValueError, match="Expected a dict of"):
        flax.save([jnp.ones(3)])
    with open(path, "rb") as f:
        assert f.read() == good


def test_flax_is_cpu_only_as_the_reference(jnp, path):
    from libsafetensors import flax, safe_open

    flax.save_file({"a": jnp.ones(3)}, path)
    with pytest.raises(SafetensorError, match="Device cuda:0 is not supported for framework flax"):
        safe_open(path, framework="flax", device="cuda:0")


def test_flax_files_are_the_references_bytes_both_ways(jnp, tmp_path):
    pytest.importorskip("safetensors")
    out = run("""
        import numpy as np, jax.numpy as jnp
        import safetensors, safetensors.flax as ref
        import libsafetensors.flax as ours
        if safetensors.__version__ != "0.8.0":
            print("no reference 0.8"); raise SystemExit
        # What both can save and load (the reference's flax loads no BF16 or F8).
        arrays = {"w": jnp.arange(12, dtype=jnp.float32).reshape(3, 4),
                  "h": jnp.array([1.5, -2.0], dtype=jnp.float16),
                  "n": jnp.array([[1, 2]], dtype=jnp.int32), "m": jnp.array([True, False]),
                  "e": jnp.zeros((0, 2), dtype=jnp.float32)}
        bits = lambda a: (str(np.asarray(a).dtype), np.asarray(a).shape, np.asarray(a).tobytes())
        ours_bytes = ours.save(dict(arrays), metadata={"k": "v"})
        assert ours_bytes == ref.save(dict(arrays), metadata={"k": "v"})
        for loaded in (ref.load(ours_bytes), ours.load(ref.save(dict(arrays)))):
            assert {k: bits(v) for k, v in loaded.items()} == {k: bits(v) for k, v in arrays.items()}
        ours.save_file(arrays, "ours.safetensors")
        ref.save_file(dict(arrays), "ref.safetensors")
        assert open("ours.safetensors", "rb").read() == open("ref.safetensors", "rb").read()
        loaded = ref.load_file("ours.safetensors")
        assert {k: bits(v) for k, v in loaded.items()} == {k: bits(v) for k, v in arrays.items()}
        print("same")
        """, tmp_path)
    if out.strip() == "no reference 0.8":
        pytest.skip("the reference safetensors 0.8 is not installed")
    assert out.strip() == "same"


def test_installed_alias_imports_flax_only_when_asked(jnp, tmp_path):
    out = run("""
        import sys
        import libsafetensors
        libsafetensors.install_as_safetensors()
        assert "jax" not in sys.modules and "safetensors.flax" not in sys.modules
        import safetensors.flax
        from safetensors.flax import load_file
        import libsafetensors.flax
        assert safetensors.flax is libsafetensors.flax
        assert load_file is libsafetensors.flax.load_file
        assert sys.modules["safetensors.flax"] is libsafetensors.flax
        libsafetensors.uninstall_as_safetensors()
        assert sys.modules.get("safetensors.flax") is not libsafetensors.flax
        print("ok")
        """, tmp_path)
    assert out.strip() == "ok"


def test_installed_alias_replaces_an_imported_reference_flax(jnp, tmp_path):
    pytest.importorskip("safetensors")
    out = run("""
        import sys, types
        import safetensors
        if safetensors.__version__ != "0.8.0":
            print("no reference 0.8"); raise SystemExit
        import safetensors.flax
        user = types.ModuleType("user_code")
        exec("from safetensors.flax import load_file, save_file", vars(user))
        sys.modules["user_code"] = user
        reference_load = user.load_file
        import libsafetensors, libsafetensors.flax
        rebound = libsafetensors.install_as_safetensors()
        assert "user_code.load_file" in rebound and "user_code.save_file" in rebound, rebound
        assert user.load_file is libsafetensors.flax.load_file
        import safetensors.flax as now
        assert now is libsafetensors.flax
        libsafetensors.uninstall_as_safetensors()
        assert user.load_file is reference_load
        assert sys.modules["safetensors.flax"] is not libsafetensors.flax
        print("ok")
        """, tmp_path)
    if out.strip() == "no reference 0.8":
        pytest.skip("the reference safetensors 0.8 is not installed")
    assert out.strip() == "ok"


def test_alias_of_a_missing_framework_fails_as_the_reference(tmp_path):
    out = run("""
        import importlib.util, sys
        import libsafetensors
        libsafetensors.install_as_safetensors()
        for name, needs in (("safetensors.mlx", "mlx"), ("safetensors.paddle", "paddle"),
                            ("safetensors.tensorflow", "tensorflow")):
            if importlib.util.find_spec(needs) is not None:
                continue
            try:
                __import__(name)
            except ImportError as error:
                assert needs in str(error), error
                assert name not in sys.modules
            else:
                raise AssertionError(name + " imported without " + needs)
        print("ok")
        """, tmp_path)
    assert out.strip() == "ok"


# --------------------------------------------------------------------------- tensorflow

def test_tensorflow_round_trip_keeps_every_dtype(path):
    tf = pytest.importorskip("tensorflow")
    from libsafetensors import tensorflow as stf

    tensors = {"f32": tf.reshape(tf.range(6, dtype=tf.float32), (2, 3)),
               "bf16": tf.constant([1.5, -2.25], dtype=tf.bfloat16),
               "f16": tf.constant([1.0, 2.0], dtype=tf.float16),
               "i64": tf.constant([1, -2], dtype=tf.int64), "b": tf.constant([True, False]),
               "empty": tf.zeros((0, 3)), "scalar": tf.constant(3.0)}
    stf.save_file(tensors, path)
    for loaded in (stf.load_file(path), stf.load(stf.save(tensors))):
        for name, tensor in tensors.items():
            assert isinstance(loaded[name], tf.Tensor), name
            assert bits(loaded[name].numpy()) == bits(tensor.numpy()), name
    with pytest.raises(ValueError, match="Key `x` is invalid, expected tf.Tensor"):
        stf.save({"x": "text"})


# --------------------------------------------------------------------------- mlx

def test_mlx_round_trip_keeps_bfloat16(path):
    pytest.importorskip("mlx.core")
    import mlx.core as mx

    from libsafetensors import mlx as smx
    from libsafetensors import safe_open

    arrays = {"f32": mx.arange(6, dtype=mx.float32).reshape(2, 3),
              "bf16": mx.array([1.5, -2.25, 3.0e38], dtype=mx.bfloat16),
              "f16": mx.array([1.0, 2.0], dtype=mx.float16), "i8": mx.array([1, -2], dtype=mx.int8),
              "b": mx.array([True, False]), "empty": mx.zeros((0, 3)), "scalar": mx.array(3.0),
              "empty_bf16": mx.zeros((0, 2), dtype=mx.bfloat16)}
    smx.save_file(arrays, path)
    for loaded in (smx.load_file(path), smx.load(smx.save(arrays))):
        for name, array in arrays.items():
            assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape, name
            assert bool(mx.all(loaded[name] == array)), name
    with safe_open(path, framework="mlx") as f:
        assert bool(mx.all(f.get_slice("bf16")[1:] == arrays["bf16"][1:]))
    with pytest.raises(ValueError, match="Key `x` is invalid, expected mlx.core.array"):
        smx.save({"x": 1.0})


# --------------------------------------------------------------------------- paddle

def test_paddle_round_trip_keeps_bfloat16_and_float8(path):
    paddle = pytest.importorskip("paddle")
    from libsafetensors import paddle as spd

    tensors = {"f32": paddle.ones([2, 3], dtype="float32"),
               "bf16": paddle.to_tensor([1.5, -2.25]).astype("bfloat16"),
               "f8": paddle.to_tensor([1.0, 0.5]).astype("float8_e4m3fn"),
               "f8b": paddle.to_tensor([1.0, 0.5]).astype("float8_e5m2"),
               "c64": paddle.to_tensor([1 + 2j], dtype="complex64"),
               "b": paddle.to_tensor([True, False]), "empty": paddle.zeros([0, 3])}
    spd.save_file(tensors, path)
    for loaded in (spd.load_file(path), spd.load(spd.save(tensors)), spd.load_file(path, "cpu")):
        for name, tensor in tensors.items():
            assert loaded[name].dtype == tensor.dtype, name
            assert bits(loaded[name].numpy()) == bits(tensor.numpy()), name
    with pytest.raises(ValueError, match="Key `x` is invalid, expected paddle.Tensor"):
        spd.save({"x": np.ones(2)})
    with pytest.raises(ValueError, match="`t` is not contiguous"):
        spd.save({"t": paddle.ones([4, 4]).transpose([1, 0])})


def test_paddle_files_are_the_references_both_ways(tmp_path):
    pytest.importorskip("paddle")
    pytest.importorskip("safetensors")
    out = run("""
        import numpy as np, paddle
        import safetensors, safetensors.paddle as ref
        import libsafetensors.paddle as ours
        if safetensors.__version__ != "0.8.0":
            print("no reference 0.8"); raise SystemExit
        tensors = {"w": paddle.randn([4, 5]), "h": paddle.ones([3]).astype("bfloat16"),
                   "n": paddle.to_tensor([1, 2], dtype="int64")}
        bits = lambda t: (str(t.dtype), list(t.shape), t.numpy().tobytes())
        assert ours.save(tensors) == ref.save(tensors)
        for loaded in (ref.load(ours.save(tensors)), ours.load(ref.save(tensors))):
            assert {k: bits(v) for k, v in loaded.items()} == {k: bits(v) for k, v in tensors.items()}
        print("same")
        """, tmp_path)
    if out.strip() == "no reference 0.8":
        pytest.skip("the reference safetensors 0.8 is not installed")
    assert out.strip() == "same"
