// Module setup of `libsafetensors._core`: the exception type, the translation of library errors
// and the buffer type shared by the reading and writing halves.
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>

#include "bindings.hpp"
#include "safetensors/file.hpp"
#include "safetensors/version.hpp"

namespace safetensors::python {

namespace {

PyObject* error_type = nullptr;

// Storage for zero-length buffers: the buffer protocol wants a valid pointer even for 0 bytes.
std::byte empty_buffer[1];

}  // namespace

py::handle safetensor_error() {
  return error_type;
}

namespace {

// Messages quote file names, which need not be UTF-8: their other bytes are shown escaped
// (\xff) rather than making the error itself fail.
py::str message_text(const std::string& message) {
  PyObject* text = PyUnicode_DecodeUTF8(message.data(), static_cast<py::ssize_t>(message.size()),
                                        "backslashreplace");
  if (text == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(text);
}

// Sets `type(message)` as the pending exception, with `code` set to the code's name when the
// exception comes from a library Error (the class attribute leaves it None otherwise).
void set_error(py::handle type, const std::string& message, std::optional<ErrorCode> code) {
  py::object exception = type(message_text(message));
  if (code) exception.attr("code") = py::str(std::string(error_code_name(*code)));
  PyErr_SetObject(type.ptr(), exception.ptr());
}

}  // namespace

void raise(py::handle type, const std::string& message, std::optional<ErrorCode> code) {
  set_error(type, message, code);
  throw py::error_already_set();
}

void raise_error(const Error& error, const std::string& prefix) {
  raise(safetensor_error(), prefix + error.what(), error.code());
}

void reject_null_byte(const std::string& text, const std::string& what, const std::string& prefix) {
  if (text.find('\0') == std::string::npos) return;
  std::string shown;
  for (const char c : text) {
    if (c == '\0') {
      shown += "\\x00";
    } else {
      shown += c;
    }
  }
  raise(safetensor_error(), prefix + what + " \"" + shown + "\" contains a null byte",
        ErrorCode::nul_character);
}

void reject_null_bytes(const File& file, const std::string& prefix) {
  const std::string where = prefix + file.name() + ": ";
  for (const TensorInfo& t : file.tensors()) reject_null_byte(t.name, "tensor name", where);
  if (const std::optional<Metadata>& metadata = file.metadata()) {
    for (const auto& [key, value] : *metadata) {
      reject_null_byte(key, "metadata key", where);
      reject_null_byte(value, "value of metadata key " + key, where);
    }
  }
}

std::string fs_path(py::handle path) {
  PyObject* raw = nullptr;
  // The converter os.open uses: str is encoded with surrogateescape, bytes taken as they are.
  if (PyUnicode_FSConverter(path.ptr(), &raw) == 0) throw py::error_already_set();
  const auto encoded = py::reinterpret_steal<py::bytes>(raw);
  return std::string(encoded);
}

py::str fs_name(const std::string& path) {
  PyObject* name =
      PyUnicode_DecodeFSDefaultAndSize(path.data(), static_cast<py::ssize_t>(path.size()));
  if (name == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(name);
}

void PinnedBuffer::Release::operator()(Py_buffer* view) const {
  PyBuffer_Release(view);
  delete view;
}

PinnedBuffer PinnedBuffer::pin(py::handle object, const std::string& what) {
  PinnedBuffer out;
  auto view = std::make_unique<Py_buffer>();
  // Strides and format asked for, so that every exporter can describe its layout.
  if (PyObject_GetBuffer(object.ptr(), view.get(), PyBUF_RECORDS_RO) != 0) {
    if (!PyErr_ExceptionMatches(PyExc_TypeError)) throw py::error_already_set();
    PyErr_Clear();
    raise(PyExc_TypeError, what + " must be a bytes-like object (the buffer protocol), not " +
                               std::string(Py_TYPE(object.ptr())->tp_name));
  }
  out.view_.reset(view.release());
  const Py_buffer& pinned = *out.view_;
  // numpy object arrays export their PyObject pointers, which are not tensor data.
  if (pinned.format != nullptr && std::strchr(pinned.format, 'O') != nullptr) {
    raise(PyExc_TypeError, what + " holds Python objects (buffer format \"" +
                               std::string(pinned.format) + "\"), not numbers");
  }
  out.bytes_ = {static_cast<const std::byte*>(pinned.buf), static_cast<std::size_t>(pinned.len)};
  return out;
}

PinnedBuffer PinnedBuffer::readable(py::handle object, const std::string& what) {
  PinnedBuffer out = pin(object, what);
  if (!PyBuffer_IsContiguous(out.view_.get(), 'C')) {
    out.copy_.resize(out.bytes_.size());
    if (PyBuffer_ToContiguous(out.copy_.data(), out.view_.get(), out.view_->len, 'C') != 0) {
      throw py::error_already_set();
    }
    out.bytes_ = out.copy_;
  }
  return out;
}

PinnedBuffer PinnedBuffer::writable(py::handle object, const std::string& what) {
  PinnedBuffer out = pin(object, what);
  if (out.view_->readonly) raise(PyExc_TypeError, what + " must be writable; it is read-only");
  if (!PyBuffer_IsContiguous(out.view_.get(), 'C')) {
    raise(PyExc_ValueError, what +
                                " must be C-contiguous (one run of bytes); it is a strided "
                                "or reversed view: pass the array it is a view of, or a copy");
  }
  return out;
}

Bytes Bytes::view(std::shared_ptr<const void> owner, std::span<const std::byte> bytes,
                  bool writable) {
  Bytes out;
  out.owner_ = std::move(owner);
  // Writable only when the owner mapped the pages copy-on-write (see open.cpp).
  out.view_ = const_cast<std::byte*>(bytes.data());
  out.size_ = bytes.size();
  out.writable_ = writable;
  return out;
}

Bytes Bytes::owned(std::vector<std::byte> bytes) {
  Bytes out;
  out.owned_ = std::move(bytes);
  out.size_ = out.owned_.size();
  return out;
}

std::byte* Bytes::data() noexcept {
  if (size_ == 0) return empty_buffer;
  return owner_ ? view_ : owned_.data();
}

}  // namespace safetensors::python

namespace st = safetensors::python;

PYBIND11_MODULE(_core, module) {
  module.doc() = "Native core of libsafetensors: reading, slicing and writing safetensors files.";
  // Named as if defined in the package itself, so that pickling finds it there.
  // `code` is None on the class; errors from the library set it on the instance.
  st::py::dict attributes;
  attributes["code"] = st::py::none();
  st::error_type = PyErr_NewExceptionWithDoc(
      "libsafetensors.SafetensorError",
      "Custom Python Exception for Safetensor errors.\n\n"
      "`code` names the library's error code (e.g. \"invalid_header\"), or is None for an "
      "error found by the Python layer.",
      PyExc_Exception, attributes.ptr());
  if (st::error_type == nullptr) throw st::py::error_already_set();
  module.add_object("SafetensorError", st::py::handle(st::error_type));
  module.attr("__version__") = SAFETENSORS_VERSION_STRING;

  // Any library error that no binding translated with more context.
  st::py::register_exception_translator([](std::exception_ptr error) {
    try {
      if (error) std::rethrow_exception(error);
    } catch (const safetensors::Error& e) {
      st::set_error(st::error_type, e.what(), e.code());
    }
  });

  st::py::class_<st::Bytes>(module, "_Bytes", st::py::buffer_protocol())
      .def_buffer([](st::Bytes& bytes) {
        return st::py::buffer_info(bytes.data(), 1, st::py::format_descriptor<uint8_t>::format(), 1,
                                   {static_cast<st::py::ssize_t>(bytes.size())}, {1},
                                   !bytes.writable());
      })
      .def_property_readonly("nbytes", &st::Bytes::size)
      .def_property_readonly("is_view", &st::Bytes::is_view)
      .def_property_readonly(
          "address",
          [](st::Bytes& bytes) { return reinterpret_cast<std::uintptr_t>(bytes.data()); })
      .def("__len__", &st::Bytes::size);

  st::register_dtypes(module);
  st::register_open(module);
  st::register_serialize(module);
  st::register_checkpoint(module);
  st::register_device(module);
}
