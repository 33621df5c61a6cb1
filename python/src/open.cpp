// Reading: `_core.File`, an open safetensors file handing out tensor bytes (zero-copy on the
// mmap backend) and slices. Framework conversion happens in Python (libsafetensors/_open.py).
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "safetensors/file.hpp"
#include "safetensors/slice.hpp"
#include "safetensors/source.hpp"
#include "signals.hpp"

namespace safetensors::python {

namespace {

// An in-memory copy of a whole file, for `deserialize`-style opening from Python bytes.
class OwnedSource final : public Source {
 public:
  OwnedSource(std::vector<std::byte> bytes, std::string name)
      : bytes_(std::move(bytes)), name_(std::move(name)) {}

  std::uint64_t size() const noexcept override { return bytes_.size(); }
  void read_at(std::uint64_t offset, std::span<std::byte> out) const override {
    if (offset > bytes_.size() || out.size() > bytes_.size() - offset) {
      throw Error(ErrorCode::invalid_argument,
                  name_ + ": cannot read " + std::to_string(out.size()) + " bytes at offset " +
                      std::to_string(offset) + ": the buffer is only " +
                      std::to_string(bytes_.size()) + " bytes long");
    }
    if (!out.empty()) std::memcpy(out.data(), bytes_.data() + offset, out.size());
  }
  std::span<const std::byte> mapped() const noexcept override { return bytes_; }
  const std::string& name() const noexcept override { return name_; }

 private:
  std::vector<std::byte> bytes_;
  std::string name_;
};

[[noreturn]] void raise_open_error(const std::string& path, const Error& error) {
  // As the reference, the OS error types for a file that is missing or may not be read.
  if (error.os_error() == std::errc::no_such_file_or_directory) {
    raise(PyExc_FileNotFoundError, "No such file or directory: " + path, error.code());
  }
  if (error.os_error() == std::errc::permission_denied) {
    raise(PyExc_PermissionError, "Permission denied: " + path, error.code());
  }
  const bool os_level =
      error.code() == ErrorCode::io || error.code() == ErrorCode::not_regular_file;
  raise_error(error, os_level ? "" : "Error while deserializing header: ");
}

class PyFile {
 public:
  static PyFile open(py::handle path_like, const std::string& backend) {
    const std::string path = fs_path(path_like);
    if (backend != "mmap" && backend != "pread") {
      raise(safetensor_error(), "backend " + backend + " is invalid: expected mmap or pread");
    }
    std::optional<File> file;
    try {
      py::gil_scoped_release release;
      // The mapping is copy-on-write so that tensors handed to Python can be written to, as
      // with the reference; the file itself never changes.
      file = backend == "pread" ? File::open(path, Backend::pread)
                                : File::from_source(open_writable_mmap_source(path));
    } catch (const Error& e) {
      raise_open_error(path, e);
    }
    reject_null_bytes(*file, "Error while deserializing header: ");
    return PyFile(std::move(*file));
  }

  static PyFile from_bytes(py::handle data, const std::string& name, const std::string& prefix) {
    const PinnedBuffer buffer = PinnedBuffer::readable(data, "the data to deserialize");
    const std::span<const std::byte> bytes = buffer.bytes();
    std::optional<File> file;
    try {
      // `buffer` stays pinned, so the copy needs no GIL.
      py::gil_scoped_release release;
      std::vector<std::byte> copy(bytes.begin(), bytes.end());
      file = File::from_source(std::make_shared<OwnedSource>(std::move(copy), name));
    } catch (const Error& e) {
      raise_error(e, prefix);
    }
    reject_null_bytes(*file, prefix);
    return PyFile(std::move(*file));
  }

  py::str name() const { return fs_name(file().name()); }
  bool zero_copy() const { return file().zero_copy(); }

  py::list keys() const {
    py::list out;
    for (const TensorInfo* t : file().tensors_by_name()) out.append(t->name);
    return out;
  }

  py::list offset_keys() const {
    py::list out;
    for (const TensorInfo& t : file().tensors()) out.append(t.name);
    return out;
  }

  py::object metadata() const {
    const std::optional<Metadata>& metadata = file().metadata();
    if (!metadata) return py::none();
    py::dict out;
    for (const auto& [key, value] : *metadata) out[py::str(key)] = py::str(value);
    return out;
  }

  py::tuple info(const std::string& name) const {
    const TensorInfo& t = find(name);
    return py::make_tuple(std::string(dtype_name(t.dtype)), shape_list(t.shape));
  }

  // Without the GIL, but Ctrl-C stops it: signal handlers run after each step of at most
  // 32 MiB that this thread reads (a few tens of milliseconds cold), and a KeyboardInterrupt
  // stops the workers after their current step. Pages read so far stay in the mapping, which
  // goes with the last reference to this file.
  void populate(unsigned threads, const std::optional<std::vector<std::string>>& names) const {
    const auto stop_on_signal = [](std::uint64_t, std::uint64_t) { check_signals(); };
    if (!names) {
      py::gil_scoped_release release;
      file().populate(threads, stop_on_signal);
      return;
    }
    std::vector<const TensorInfo*> selected;
    selected.reserve(names->size());
    for (const std::string& name : *names) selected.push_back(&find(name));
    py::gil_scoped_release release;
    file().populate(selected, threads, stop_on_signal);
  }

  Bytes tensor(const std::string& name) const {
    const TensorInfo& t = find(name);
    if (file().zero_copy()) return Bytes::view(owner_, file().view(t).data, true);
    std::vector<std::byte> out(t.byte_count());
    {
      py::gil_scoped_release release;
      file().read(t, out);
    }
    return Bytes::owned(std::move(out));
  }

  /// For making every tensor at once (safe_open.get_tensors): the bytes from the first tensor's
  /// start to the last one's end, one view of the mapping, and per tensor in file order (name,
  /// dtype, shape, offset in that view). None when the file is not mapped or holds no bytes.
  py::object layout() const {
    const std::span<const TensorInfo> tensors = file().tensors();
    if (!file().zero_copy() || tensors.empty()) return py::none();
    std::uint64_t begin = tensors.front().data_begin;
    std::uint64_t end = 0;
    for (const TensorInfo& t : tensors) {
      begin = std::min(begin, t.data_begin);
      end = std::max(end, t.data_end);
    }
    if (end == begin) return py::none();
    const TensorInfo& first = tensors.front();
    // view() of the first tensor locates the mapping; every tensor lies inside it.
    const std::byte* base = file().view(first).data.data() - (first.data_begin - begin);
    py::list entries;
    // Per dtype, where its non-empty tensors begin and end: the Python side gives each dtype
    // one storage over exactly that span (libsafetensors/_convert.py, torch_tensors).
    std::map<Dtype, std::pair<std::uint64_t, std::uint64_t>> spans;
    for (const TensorInfo& t : tensors) {
      entries.append(py::make_tuple(t.name, std::string(dtype_name(t.dtype)), shape_list(t.shape),
                                    t.data_begin - begin));
      if (t.data_end == t.data_begin) continue;
      const auto [at, added] = spans.try_emplace(t.dtype, t.data_begin - begin, t.data_end - begin);
      if (!added) {
        at->second.first = std::min(at->second.first, t.data_begin - begin);
        at->second.second = std::max(at->second.second, t.data_end - begin);
      }
    }
    py::dict dtype_spans;
    for (const auto& [dtype, span] : spans) {
      dtype_spans[py::str(std::string(dtype_name(dtype)))] =
          py::make_tuple(span.first, span.second);
    }
    return py::make_tuple(Bytes::view(owner_, {base, static_cast<std::size_t>(end - begin)}, true),
                          entries, dtype_spans);
  }

  /// `args`: per dimension `(index,)` or `(start, stop, step)`, already resolved against the
  /// shape by the Python layer (libsafetensors/_open.py).
  py::tuple slice(const std::string& name, const py::list& args) const {
    const TensorInfo& t = find(name);
    std::vector<SliceArg> parsed;
    parsed.reserve(args.size());
    for (const py::handle arg : args) {
      const auto item = arg.cast<py::tuple>();
      if (item.size() == 1) {
        parsed.push_back(SliceArg::at(item[0].cast<std::int64_t>()));
      } else {
        parsed.push_back(SliceArg::range(item[0].cast<std::int64_t>(), item[1].cast<std::int64_t>(),
                                         item[2].cast<std::int64_t>()));
      }
    }
    std::optional<SlicedTensor> sliced;
    {
      py::gil_scoped_release release;
      sliced.emplace(file().slice(t.name, parsed));
    }
    py::list shape = shape_list(sliced->shape());
    if (sliced->is_view()) return py::make_tuple(Bytes::view(owner_, sliced->bytes(), true), shape);
    return py::make_tuple(Bytes::owned(std::move(*sliced).release()), shape);
  }

 private:
  explicit PyFile(File file) : owner_(std::make_shared<const File>(std::move(file))) {}

  const File& file() const { return *static_cast<const File*>(owner_.get()); }

  const TensorInfo& find(const std::string& name) const {
    const TensorInfo* t = file().find(name);
    if (t == nullptr) raise(safetensor_error(), "File does not contain tensor " + name);
    return *t;
  }

  static py::list shape_list(const std::vector<std::uint64_t>& shape) {
    py::list out;
    for (const std::uint64_t d : shape) out.append(d);
    return out;
  }

  // A shared File: every Bytes view holds a reference, which keeps the mapping alive.
  std::shared_ptr<const void> owner_;
};

}  // namespace

void register_open(py::module_& module) {
  py::class_<PyFile>(module, "File")
      .def_static("open", &PyFile::open, py::arg("path"), py::arg("backend") = "mmap",
                  "Opens and validates a file; the GIL is released while the header is read.")
      .def_static("from_bytes", &PyFile::from_bytes, py::arg("data"), py::arg("name") = "<bytes>",
                  py::arg("prefix") = "Error while deserializing header: ",
                  "Validates a whole file held in a bytes-like object (copied).")
      .def_property_readonly("name", &PyFile::name)
      .def_property_readonly("zero_copy", &PyFile::zero_copy)
      .def("keys", &PyFile::keys, "Tensor names, sorted.")
      .def("offset_keys", &PyFile::offset_keys, "Tensor names in file (data offset) order.")
      .def("metadata", &PyFile::metadata)
      .def("info", &PyFile::info, "(dtype name, shape) of a tensor.")
      .def("tensor", &PyFile::tensor, "A tensor's bytes: a view of the mapping or a copy.")
      .def("layout", &PyFile::layout,
           "(data view, [(name, dtype, shape, offset in the view)] in file order, {dtype: "
           "(first, end) offsets of its non-empty tensors}), or None when the file is not "
           "mapped.")
      .def("populate", &PyFile::populate, py::arg("threads") = 0, py::arg("names") = py::none(),
           "Reads every page of the tensor data (of the tensors `names` only, when given) into "
           "memory now (mapped files only).")
      .def("slice", &PyFile::slice, "(bytes, shape) of a slice of a tensor.");
}

}  // namespace safetensors::python
