// Reading the header JSON into tensor entries and metadata (docs/FORMAT.md rules 5 and 6).
#pragma once

#include <cstddef>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "safetensors/header.hpp"

namespace safetensors::detail {

/// The header as written, before the offset rules are checked.
struct JsonHeader {
  /// In the order the header lists them; names may repeat.
  std::vector<TensorInfo> tensors;
  /// Byte offset in the header of each tensor's key, to order duplicate reports.
  std::vector<std::size_t> key_offsets;
  std::optional<Metadata> metadata;
  /// The first repeated key other than a tensor name (those are found by sorting), or
  /// `no_duplicate`.
  std::size_t duplicate_offset = no_duplicate;
  std::string duplicate_message;

  static constexpr std::size_t no_duplicate = std::numeric_limits<std::size_t>::max();
};

/// Parses UTF-8 header JSON. Throws invalid_header at the first rule-5 problem; duplicate
/// keys are only recorded, since a rule-5 problem later in the header takes precedence.
[[nodiscard]] JsonHeader read_header_json(std::span<const std::byte> json, std::string_view origin);

}  // namespace safetensors::detail
