// Parsing and validating a safetensors header (docs/FORMAT.md "Validation on read").
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "safetensors/dtype.hpp"
#include "safetensors/export.hpp"

namespace safetensors {

/// `__metadata__`: string keys to string values, kept sorted (the order we write them in).
using Metadata = std::map<std::string, std::string, std::less<>>;

/// The largest header docs/FORMAT.md allows (rule 2); exactly this size is accepted.
inline constexpr std::uint64_t max_header_size = 100'000'000;

/// The most dimensions a tensor may have (docs/FORMAT.md): numpy's limit, far above any model's,
/// and low enough that a shape costs a bounded amount of memory to hold and to show.
inline constexpr std::size_t max_rank = 64;

/// One tensor entry of a validated header. Offsets are relative to the data buffer.
struct SAFETENSORS_API TensorInfo {
  std::string name;
  Dtype dtype = Dtype::U8;
  std::vector<std::uint64_t> shape;
  std::uint64_t data_begin = 0;
  std::uint64_t data_end = 0;

  std::uint64_t byte_count() const noexcept { return data_end - data_begin; }
  /// Number of elements; fits in 64 bits for every validated tensor.
  std::uint64_t element_count() const noexcept;
};

/// A fully validated header. Every tensor lies inside the data buffer.
struct SAFETENSORS_API Header {
  /// Tensors in data order (ascending data_offsets, ties broken by name).
  std::vector<TensorInfo> tensors;
  /// Indices into `tensors` in name order (bytewise ascending).
  std::vector<std::size_t> name_order;
  /// Absent when the file has no `__metadata__` or it is `null`.
  std::optional<Metadata> metadata;
  /// File offset of the data buffer: 8 + N.
  std::uint64_t data_start = 0;
  /// Length of the data buffer in bytes.
  std::uint64_t data_size = 0;
};

/// Rules 1-3: reads N from the first bytes of a file of `file_size` bytes and checks it.
/// `prefix` holds min(8, file_size) bytes. `origin` names the file in error messages.
[[nodiscard]] SAFETENSORS_API std::uint64_t parse_header_length(std::span<const std::byte> prefix,
                                                                std::uint64_t file_size,
                                                                std::string_view origin);

/// Rules 4-11: parses the N header bytes and validates them against a data buffer of
/// `data_size` bytes (file size - 8 - N). Throws `Error` with the code of the first rule
/// broken. Allocates only the header copy, the parser's working space, a compact entry per
/// tensor and the result.
[[nodiscard]] SAFETENSORS_API Header parse_header(std::span<const std::byte> header_json,
                                                  std::uint64_t data_size, std::string_view origin);

/// parse_header's checks without its result, for a caller that needs only the verdict: a
/// header's TensorInfos are most of the memory and time of checking a large one. Returns the
/// number of tensors.
[[nodiscard]] SAFETENSORS_API std::size_t validate_header(std::span<const std::byte> header_json,
                                                          std::uint64_t data_size,
                                                          std::string_view origin);

/// All rules 1-11 on a complete in-memory file.
[[nodiscard]] SAFETENSORS_API Header parse_file_header(std::span<const std::byte> file,
                                                       std::string_view origin);

}  // namespace safetensors
