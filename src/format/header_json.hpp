// Reading the header JSON into tensor entries and metadata (docs/FORMAT.md rules 5 and 6).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "format/tensor_entry.hpp"
#include "safetensors/header.hpp"

namespace safetensors::detail {

/// The header as written, before the offset rules are checked.
struct JsonHeader {
  /// In the order the header lists them; names may repeat.
  std::vector<TensorEntry> tensors;
  /// Every entry's shape, one after another.
  std::vector<std::uint64_t> dims;
  /// How many leading bytes every tensor name shares, counted while the names are read.
  std::size_t name_prefix = 0;
  std::optional<Metadata> metadata;
  /// The first repeated key other than a tensor name (those are found by sorting), or
  /// `no_duplicate`.
  std::size_t duplicate_offset = no_duplicate;
  std::string duplicate_message;
  /// The text the names point into, when the caller's had no room for the parser's padding.
  std::unique_ptr<char[]> text_copy;
  /// Names written with escapes, unescaped (a deque never moves what it holds).
  std::deque<std::string> unescaped_names;

  std::span<const std::uint64_t> shape(const TensorEntry& entry) const noexcept {
    return {dims.data() + entry.shape_at, entry.rank};
  }

  static constexpr std::size_t no_duplicate = std::numeric_limits<std::size_t>::max();
};

/// Readable bytes the JSON parser needs after the header ("padding"): it reads whole blocks,
/// but what these bytes hold never changes the result.
inline constexpr std::size_t json_padding = 64;

/// Parses header JSON. Throws invalid_header_encoding when it is not UTF-8 (rule 4), else
/// invalid_header at the first rule-5 problem; duplicate keys are only recorded, since a
/// rule-5 problem later in the header takes precedence.
/// `padded`: `json_padding` readable bytes follow `json`, so the parser reads it in place
/// instead of copying it first.
[[nodiscard]] JsonHeader read_header_json(std::span<const std::byte> json, std::string_view origin,
                                          bool padded = false);

/// parse_header (header.hpp) for a header followed by `json_padding` readable bytes.
[[nodiscard]] Header parse_padded_header(std::span<const std::byte> json, std::uint64_t data_size,
                                         std::string_view origin);

/// validate_header (header.hpp) for a header followed by `json_padding` readable bytes.
[[nodiscard]] std::size_t validate_padded_header(std::span<const std::byte> json,
                                                 std::uint64_t data_size, std::string_view origin);

}  // namespace safetensors::detail
