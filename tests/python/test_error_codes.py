"""`code` on the exceptions that stand for a library error: the ErrorCode's name, the same
one the command line prints; None for what the Python layer finds itself."""

import pickle
import struct

import pytest

import libsafetensors
from libsafetensors import SafetensorError, deserialize, safe_open, serialize


def file_with_header(header):
    return struct.pack("<Q", len(header)) + header


def test_the_exception_type_is_unchanged():
    assert SafetensorError.__module__ == "libsafetensors"
    assert SafetensorError.__mro__[1:] == (Exception, BaseException, object)
    assert SafetensorError.code is None
    assert SafetensorError("raised by hand").code is None


@pytest.mark.parametrize("data, code", [
    (b"\x00" * 4, "header_too_small"),
    (struct.pack("<Q", 200_000_000), "header_too_large"),
    (file_with_header(b"[1]"), "invalid_header"),
    (file_with_header(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'),
     "buffer_size_mismatch"),
    (file_with_header(b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}') + bytes(4),
     "size_mismatch"),
])  # fmt: skip
def test_library_errors_carry_their_code(data, code):
    with pytest.raises(SafetensorError) as error:
        deserialize(data)
    assert error.value.code == code


def test_errors_from_the_file_reader_carry_their_code(path):
    with open(path, "wb") as f:
        f.write(file_with_header(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]'))
    with pytest.raises(SafetensorError) as error:
        safe_open(path, framework="np")
    assert error.value.code == "invalid_header"


def test_writer_errors_carry_their_code():
    with pytest.raises(SafetensorError) as error:
        serialize({"a\0b": {"dtype": "U8", "shape": [1], "data": b"x"}})
    assert error.value.code == "nul_character"
    with pytest.raises(SafetensorError) as error:
        serialize({"a": {"dtype": "U8", "shape": [2], "data": b"x"}})
    assert error.value.code == "size_mismatch"


def test_os_errors_carry_the_io_code(tmp_path):
    missing = str(tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError) as error:
        safe_open(missing, framework="np")
    assert error.value.code == "io"


def test_errors_of_the_python_layer_have_no_code(path):
    serialize_file = libsafetensors.serialize_file
    serialize_file({"a": {"dtype": "U8", "shape": [1], "data": b"x"}}, path)
    with pytest.raises(SafetensorError) as error:
        safe_open(path, framework="nope")
    assert error.value.code is None


def test_the_code_survives_pickling():
    with pytest.raises(SafetensorError) as error:
        deserialize(b"\x00" * 4)
    restored = pickle.loads(pickle.dumps(error.value))
    assert type(restored) is SafetensorError
    assert restored.code == "header_too_small"
    assert restored.args == error.value.args
