// Ordering tensor names, the costliest step of validating a large header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "format/tensor_entry.hpp"

namespace safetensors::detail {

/// How many leading bytes `a` and `b` share, counting no further than `limit`.
[[nodiscard]] std::size_t shared_prefix(std::string_view a, std::string_view b,
                                        std::size_t limit) noexcept;

/// The key of `name` after its first `prefix` bytes.
[[nodiscard]] NameKey name_key(std::string_view name, std::size_t prefix) noexcept;

/// Tensors in name order, with the names that repeat.
struct NameOrder {
  /// Indices of `tensors` sorted by name (bytewise), equal names in index order.
  std::vector<std::uint32_t> order;
  /// Ascending places i in `order` whose name equals the name at place i - 1.
  std::vector<std::uint32_t> repeats;
};

/// `name_prefix`: how many leading bytes every name shares, which a reader counts with
/// shared_prefix while the names are still in its cache; any smaller count gives the same
/// result, only slower. Every entry's key must be name_key(name, name_prefix).
[[nodiscard]] NameOrder order_by_name(std::span<const TensorEntry> tensors,
                                      std::size_t name_prefix);

}  // namespace safetensors::detail
