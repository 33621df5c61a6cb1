// Python-style slicing of a tensor: per dimension an index or a range with a positive step.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "safetensors/dtype.hpp"
#include "safetensors/export.hpp"

namespace safetensors {

/// One dimension of a slice. Negative positions count from the end, as in Python; range
/// bounds are clamped to the dimension like Python's slice.indices(); an index out of
/// range is an error. Dimensions without an argument are taken whole.
struct SAFETENSORS_API SliceArg {
  enum class Kind : std::uint8_t { index, range };
  Kind kind = Kind::range;
  std::int64_t index = 0;             // Kind::index
  std::optional<std::int64_t> start;  // Kind::range, nullopt = from the beginning
  std::optional<std::int64_t> stop;   // Kind::range, nullopt = to the end
  std::int64_t step = 1;              // Kind::range, must be > 0

  /// Selects one position and drops the dimension.
  static SliceArg at(std::int64_t i) { return {Kind::index, i, {}, {}, 1}; }
  /// Selects [start, stop) every `step` positions.
  static SliceArg range(std::optional<std::int64_t> start, std::optional<std::int64_t> stop,
                        std::int64_t step = 1) {
    return {Kind::range, 0, start, stop, step};
  }
  /// The whole dimension.
  static SliceArg all() { return {}; }
};

/// A slice resolved against a shape: per source dimension the first position, the count
/// and the step; `shape` is the result shape (indexed dimensions dropped).
struct SAFETENSORS_API SlicePlan {
  struct Dim {
    std::uint64_t start = 0;
    std::uint64_t count = 0;
    std::uint64_t step = 1;
    bool keep = true;  // false for an indexed dimension
  };
  std::vector<Dim> dims;
  std::vector<std::uint64_t> shape;
  /// True when the selected elements form one contiguous run of the source.
  bool contiguous = false;
};

/// Resolves `args` against `shape`. Throws `Error` (invalid_slice) naming `tensor_name`,
/// the dimension and the values when an index is out of range, a step is not positive or
/// there are more arguments than dimensions. For sub-byte dtypes every selected run must
/// start and end on a byte boundary.
[[nodiscard]] SAFETENSORS_API SlicePlan plan_slice(std::string_view tensor_name, Dtype dtype,
                                                   std::span<const std::uint64_t> shape,
                                                   std::span<const SliceArg> args);

/// Copies the elements `plan` selects from `source` (the whole tensor, C order) into `out`,
/// which must hold exactly the slice's bytes.
SAFETENSORS_API void copy_slice(const SlicePlan& plan, Dtype dtype,
                                std::span<const std::uint64_t> shape,
                                std::span<const std::byte> source, std::span<std::byte> out);

/// The result of slicing: a zero-copy view when the selection is contiguous in a mapped
/// file, otherwise an owned contiguous copy.
class SAFETENSORS_API SlicedTensor {
 public:
  SlicedTensor(Dtype dtype, std::vector<std::uint64_t> shape, std::span<const std::byte> view)
      : dtype_(dtype), shape_(std::move(shape)), bytes_(view) {}
  SlicedTensor(Dtype dtype, std::vector<std::uint64_t> shape, std::vector<std::byte> owned)
      : dtype_(dtype), shape_(std::move(shape)), owned_(std::move(owned)), bytes_(owned_) {}
  SlicedTensor(SlicedTensor&& other) noexcept
      : dtype_(other.dtype_),
        shape_(std::move(other.shape_)),
        owned_(std::move(other.owned_)),
        bytes_(other.is_view() ? other.bytes_ : std::span<const std::byte>(owned_)) {}
  SlicedTensor(const SlicedTensor&) = delete;
  SlicedTensor& operator=(const SlicedTensor&) = delete;

  Dtype dtype() const noexcept { return dtype_; }
  const std::vector<std::uint64_t>& shape() const noexcept { return shape_; }
  std::span<const std::byte> bytes() const noexcept { return bytes_; }
  /// True when `bytes()` points into the file's mapping rather than an owned copy.
  bool is_view() const noexcept { return owned_.empty() && !bytes_.empty(); }
  /// Takes the owned copy out (empty for a view).
  std::vector<std::byte> release() && { return std::move(owned_); }

 private:
  Dtype dtype_;
  std::vector<std::uint64_t> shape_;
  std::vector<std::byte> owned_;
  std::span<const std::byte> bytes_;
};

}  // namespace safetensors
