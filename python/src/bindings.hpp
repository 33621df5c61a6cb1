// Shared pieces of the `libsafetensors._core` extension: the Python exception type, error
// raising helpers and the byte buffer handed to numpy and torch.
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "safetensors/dtype.hpp"
#include "safetensors/error.hpp"

namespace safetensors {
class File;
}  // namespace safetensors

namespace safetensors::python {

namespace py = pybind11;

/// `libsafetensors.SafetensorError`, created once by the module.
py::handle safetensor_error();

/// Sets a Python exception of `type` and unwinds to pybind11. `code`, when given, becomes the
/// exception's `code` attribute: the name of the library error it stands for.
[[noreturn]] void raise(py::handle type, const std::string& message,
                        std::optional<ErrorCode> code = std::nullopt);

/// Raises SafetensorError with `prefix` followed by the library's message.
[[noreturn]] void raise_error(const Error& error, const std::string& prefix = {});

/// Raises SafetensorError when `text` (a tensor name or a metadata key or value, described by
/// `what`) holds a NUL character, which C strings and file systems would silently cut short.
/// The reference refuses them when writing and when reading.
void reject_null_byte(const std::string& text, const std::string& what,
                      const std::string& prefix = {});

/// `reject_null_byte` over every tensor name and metadata entry of an opened file.
void reject_null_bytes(const File& file, const std::string& prefix);

/// A file system path as the OS takes it, from anything `os.open` accepts (str, including
/// names os.fsdecode made of bytes that are not UTF-8; bytes; os.PathLike). Raises TypeError
/// for other objects and ValueError for a NUL, which would cut the name short.
std::string fs_path(py::handle path);

/// A path from the library as Python gives file names: os.fsdecode's str, which os.open and
/// os.fsencode turn back into the same bytes.
py::str fs_name(const std::string& path);

/// The bytes of a Python object with the buffer protocol, pinned until destruction.
/// `readable` takes any layout: a C-contiguous buffer is used in place, any other (a reversed
/// or strided numpy view, a memoryview slice) is copied in C order, so that strides never
/// reach the library. `writable` takes only writable C-contiguous buffers: writing through
/// a strided view as if it were one run of bytes would land outside it. Refusals are
/// TypeError or ValueError naming `what`.
class PinnedBuffer {
 public:
  static PinnedBuffer readable(py::handle object, const std::string& what);
  static PinnedBuffer writable(py::handle object, const std::string& what);

  std::span<const std::byte> bytes() const noexcept { return bytes_; }
  /// Only for buffers pinned by `writable`.
  std::span<std::byte> writable_bytes() const noexcept {
    return {const_cast<std::byte*>(bytes_.data()), bytes_.size()};
  }

 private:
  struct Release {
    void operator()(Py_buffer* view) const;
  };

  static PinnedBuffer pin(py::handle object, const std::string& what);

  std::unique_ptr<Py_buffer, Release> view_;
  std::vector<std::byte> copy_;
  std::span<const std::byte> bytes_;
};

/// Bytes exposed through the buffer protocol: either a window into a file mapping, kept alive
/// by `owner`, or memory this object owns. numpy keeps the object as the array's base and
/// torch.frombuffer holds a reference until the tensor dies, so the mapping lives exactly as
/// long as some array or tensor still points into it.
class Bytes {
 public:
  static Bytes view(std::shared_ptr<const void> owner, std::span<const std::byte> bytes,
                    bool writable);
  static Bytes owned(std::vector<std::byte> bytes);

  std::byte* data() noexcept;
  std::size_t size() const noexcept { return size_; }
  bool writable() const noexcept { return writable_; }
  /// True when the bytes are a view into a mapping rather than a copy.
  bool is_view() const noexcept { return owner_ != nullptr; }

 private:
  std::shared_ptr<const void> owner_;
  std::vector<std::byte> owned_;
  std::byte* view_ = nullptr;
  std::size_t size_ = 0;
  bool writable_ = true;
};

/// A dtype by framework name (torch's attribute, numpy's or ml_dtypes' name: "float32",
/// "bfloat16") or by the format's own ("F32"); nullopt when it is none of them.
std::optional<Dtype> dtype_from_framework_name(std::string_view name);

void register_dtypes(py::module_& module);
void register_open(py::module_& module);
void register_serialize(py::module_& module);
void register_checkpoint(py::module_& module);
void register_device(py::module_& module);

}  // namespace safetensors::python
