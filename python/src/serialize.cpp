// Writing and whole-buffer reading: `serialize`, `serialize_file` and `deserialize` with the
// reference's tensor-dict shape {"name": {"dtype": ..., "shape": [...], "data": bytes-like}}.
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bindings.hpp"
#include "safetensors/dtype.hpp"
#include "safetensors/file.hpp"
#include "safetensors/writer.hpp"
#include "signals.hpp"

namespace safetensors::python {

namespace {

// Everything `write_*` needs, with the Python buffers pinned until the write is done.
struct Prepared {
  std::vector<TensorData> tensors;
  std::vector<PinnedBuffer> pinned;
  WriteOptions options;
};

py::object field(py::handle desc, const char* key) {
  if (py::isinstance<py::dict>(desc)) {
    const auto dict = py::reinterpret_borrow<py::dict>(desc);
    if (dict.contains(key)) return dict[key];
    return py::none();
  }
  // TensorSpec and other objects describing a tensor with attributes.
  return py::getattr(desc, key, py::none());
}

py::object require(py::handle desc, const char* key) {
  py::object value = field(desc, key);
  if (value.is_none()) {
    raise(safetensor_error(),
          "Missing `" + std::string(key) + "` in " + py::repr(desc).cast<std::string>());
  }
  return value;
}

// A Python integer as a tensor's dimension, address or length: anything else is refused with
// TypeError, a value that is negative or does not fit in 64 bits with ValueError.
std::uint64_t unsigned_field(py::handle value, const std::string& what) {
  const auto index = py::reinterpret_steal<py::object>(PyNumber_Index(value.ptr()));
  if (!index) {
    PyErr_Clear();
    raise(PyExc_TypeError, what + " must be an integer, not " + Py_TYPE(value.ptr())->tp_name);
  }
  const unsigned long long out = PyLong_AsUnsignedLongLong(index.ptr());
  if (PyErr_Occurred() != nullptr) {
    PyErr_Clear();
    raise(PyExc_ValueError, what + " = " + py::repr(index).cast<std::string>() +
                                " is negative or does not fit in 64 bits");
  }
  return out;
}

// Python text as UTF-8, which the header is written in; a str holding lone surrogates (as
// os.fsdecode makes of bytes that are not UTF-8) has no such form.
std::string utf8_text(py::handle text, const std::string& what) {
  if (!py::isinstance<py::str>(text)) {
    raise(PyExc_TypeError, what + " must be a str, not " + Py_TYPE(text.ptr())->tp_name);
  }
  py::ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(text.ptr(), &size);
  if (data == nullptr) {
    PyErr_Clear();
    raise(PyExc_ValueError, what + " " + py::repr(text).cast<std::string>() +
                                " is not valid Unicode (it holds lone surrogates)");
  }
  return {data, static_cast<std::size_t>(size)};
}

// The bytes behind a raw `data_ptr`: the caller keeps them alive for the duration of the call;
// all that can be checked is that a non-empty range does not start at address 0.
std::span<const std::byte> raw_bytes(const std::string& name, py::handle desc) {
  const std::string what = "tensor `" + name + "`: ";
  const std::uint64_t address = unsigned_field(require(desc, "data_ptr"), what + "data_ptr");
  const std::uint64_t length = unsigned_field(require(desc, "data_len"), what + "data_len");
  if (address == 0 && length != 0) {
    raise(PyExc_ValueError,
          what + "data_ptr is 0 (a null pointer) for " + std::to_string(length) + " bytes");
  }
  if (address > UINTPTR_MAX - length) {
    raise(PyExc_ValueError, what + "data_ptr + data_len overflows the address space");
  }
  return {reinterpret_cast<const std::byte*>(static_cast<std::uintptr_t>(address)),
          static_cast<std::size_t>(length)};
}

TensorData prepare_tensor(const std::string& name, py::handle desc,
                          std::vector<PinnedBuffer>& pinned) {
  const std::string what = "tensor `" + name + "`: ";
  std::vector<std::uint64_t> shape;
  for (const py::handle d : require(desc, "shape")) {
    shape.push_back(unsigned_field(d, what + "dimension " + std::to_string(shape.size())));
  }

  std::span<const std::byte> bytes;
  if (py::object data = field(desc, "data"); !data.is_none()) {
    pinned.push_back(PinnedBuffer::readable(data, what + "data"));
    bytes = pinned.back().bytes();
  } else if (!field(desc, "data_ptr").is_none()) {
    // As in the reference since 0.8, a raw address comes in a TensorSpec, whose constructor
    // checks it; dicts keep the older {dtype, shape, data} form.
    if (py::isinstance<py::dict>(desc)) {
      raise(PyExc_TypeError, what +
                                 "a raw `data_ptr` is given with TensorSpec(dtype=..., "
                                 "shape=..., data_ptr=..., data_len=...), not in a dict");
    }
    bytes = raw_bytes(name, desc);
  } else {
    raise(safetensor_error(), "Missing `data` in " + py::repr(desc).cast<std::string>());
  }

  const std::string dtype_text = utf8_text(require(desc, "dtype"), what + "dtype");
  const std::optional<Dtype> dtype = dtype_from_framework_name(dtype_text);
  if (!dtype) raise(safetensor_error(), what + "dtype " + dtype_text + " is not covered");
  return TensorData::from_bytes(name, *dtype, std::move(shape), bytes);
}

Prepared prepare(py::handle tensor_dict, py::handle metadata) {
  if (!py::isinstance<py::dict>(tensor_dict)) {
    raise(PyExc_TypeError, "tensor_dict must be a dict of str to tensor descriptions, not " +
                               py::str(tensor_dict.get_type()).cast<std::string>());
  }
  Prepared out;
  for (const auto& [key, desc] : py::reinterpret_borrow<py::dict>(tensor_dict)) {
    const std::string name = utf8_text(key, "tensor name");
    reject_null_byte(name, "tensor name", "Error while serializing: ");
    out.tensors.push_back(prepare_tensor(name, desc, out.pinned));
  }
  if (!metadata.is_none()) {
    if (!py::isinstance<py::dict>(metadata)) {
      raise(PyExc_TypeError, "metadata must be a dict of str to str, not " +
                                 py::str(metadata.get_type()).cast<std::string>());
    }
    Metadata entries;
    for (const auto& [key, value] : py::reinterpret_borrow<py::dict>(metadata)) {
      if (!py::isinstance<py::str>(key) || !py::isinstance<py::str>(value)) {
        raise(PyExc_TypeError, "metadata must map str to str; got " +
                                   py::repr(key).cast<std::string>() + ": " +
                                   py::repr(value).cast<std::string>());
      }
      std::string text_key = utf8_text(key, "metadata key");
      std::string text_value = utf8_text(value, "value of metadata key " + text_key);
      reject_null_byte(text_key, "metadata key", "Error while serializing: ");
      reject_null_byte(text_value, "value of metadata key " + text_key,
                       "Error while serializing: ");
      entries.emplace(std::move(text_key), std::move(text_value));
    }
    out.options.metadata = std::move(entries);
  }
  return out;
}

// `options` (metadata borrowed, not copied) with Ctrl-C checked between chunks.
WriteOptions stop_on_signal(const WriteOptions& options) {
  WriteOptions out;
  out.borrowed_metadata = options.metadata ? &*options.metadata : options.borrowed_metadata;
  out.alignment = options.alignment;
  out.between_chunks = check_signals;
  return out;
}

py::bytes serialize(py::handle tensor_dict, py::handle metadata) {
  const Prepared prepared = prepare(tensor_dict, metadata);
  try {
    const WritePlan plan = plan_write(prepared.tensors, prepared.options);
    // Written straight into the bytes object: one copy of the data, made without the GIL.
    PyObject* raw = PyBytes_FromStringAndSize(nullptr, static_cast<py::ssize_t>(plan.file_size()));
    if (raw == nullptr) throw py::error_already_set();
    auto out = py::reinterpret_steal<py::bytes>(raw);
    char* cursor = PyBytes_AS_STRING(raw);
    {
      py::gil_scoped_release release;
      write_to_sink(prepared.tensors, stop_on_signal(prepared.options),
                    [&](std::span<const std::byte> chunk) {
                      std::memcpy(cursor, chunk.data(), chunk.size());
                      cursor += chunk.size();
                    });
    }
    return out;
  } catch (const Error& e) {
    raise_error(e, "Error while serializing: ");
  }
}

void serialize_file(py::handle tensor_dict, py::handle filename, py::handle metadata) {
  const Prepared prepared = prepare(tensor_dict, metadata);
  const std::string path = fs_path(filename);
  try {
    py::gil_scoped_release release;
    // An interrupted write_file deletes its temporary and leaves the target as it was.
    write_file(path, prepared.tensors, stop_on_signal(prepared.options));
  } catch (const Error& e) {
    raise_error(e, "Error while serializing: ");
  }
}

py::list deserialize(py::handle data) {
  const PinnedBuffer buffer = PinnedBuffer::readable(data, "the data to deserialize");
  const std::span<const std::byte> bytes = buffer.bytes();
  std::optional<File> file;
  try {
    py::gil_scoped_release release;
    file = File::from_source(make_memory_source(bytes, "<bytes>"));
  } catch (const Error& e) {
    raise_error(e, "Error while deserializing: ");
  }
  reject_null_bytes(*file, "Error while deserializing: ");
  py::list out;
  for (const TensorInfo& t : file->tensors()) {
    const std::span<const std::byte> view = file->view(t).data;
    py::list shape;
    for (const std::uint64_t d : t.shape) shape.append(d);
    py::dict entry;
    entry["shape"] = shape;
    entry["dtype"] = std::string(dtype_name(t.dtype));
    entry["data"] = py::reinterpret_steal<py::object>(PyByteArray_FromStringAndSize(
        reinterpret_cast<const char*>(view.data()), static_cast<py::ssize_t>(view.size())));
    out.append(py::make_tuple(t.name, entry));
  }
  return out;
}

// The safetensors name of a dtype given by framework or format name ("float32" -> "F32").
std::string dtype_code(const std::string& name) {
  const std::optional<Dtype> dtype = dtype_from_framework_name(name);
  if (!dtype) raise(safetensor_error(), "dtype " + name + " is not covered");
  return std::string(dtype_name(*dtype));
}

}  // namespace

void register_serialize(py::module_& module) {
  register_signal_translator();
  module.def("_dtype_code", &dtype_code, py::arg("name"),
             "The format's name of a dtype given by framework (\"float32\") or format name.");
  module.def("serialize", &serialize, py::arg("tensor_dict"), py::arg("metadata") = py::none(),
             "Serializes {name: {dtype, shape, data}} into the bytes of a safetensors file.");
  module.def("serialize_file", &serialize_file, py::arg("tensor_dict"), py::arg("filename"),
             py::arg("metadata") = py::none(),
             "Serializes into a file, atomically (a temporary file renamed over `filename`).");
  module.def("deserialize", &deserialize, py::arg("bytes"),
             "[(name, {shape, dtype, data}), ...] in file order from a whole file in memory.");
}

}  // namespace safetensors::python
