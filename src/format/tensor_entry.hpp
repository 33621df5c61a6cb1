// A tensor entry as the header lists it, held compactly while the header is checked.
#pragma once

#include <cstdint>
#include <string_view>

#include "safetensors/dtype.hpp"

namespace safetensors::detail {

/// Sixteen bytes of a tensor name held as two big-endian integers, zero-padded, so that keys
/// compare like the names do wherever these bytes differ (header_names.hpp).
struct NameKey {
  std::uint64_t high = 0;
  std::uint64_t low = 0;
};

/// A public TensorInfo costs two heap blocks (its name and its shape); for a header of 200,000
/// tensors they were 6,700 of the 17,300 page faults of `safetensors validate` (README,
/// "Opening 200,000 tensors"). An entry points into the header's text instead, and TensorInfos
/// are made only for a caller that keeps them.
struct TensorEntry {
  /// In the header's text, or, for a name written with escapes, beside it.
  std::string_view name;
  std::uint64_t data_begin = 0;
  std::uint64_t data_end = 0;
  /// Where the entry's key starts in the header (it is at most 100 MB), to report the earliest
  /// of several problems.
  std::uint32_t key_at = 0;
  /// Where its shape starts in the list of every entry's dimensions (JsonHeader::dims).
  std::uint32_t shape_at = 0;
  std::uint8_t rank = 0;
  Dtype dtype = Dtype::U8;
  /// The name's bytes after the prefix every name shares (name_key), made while the name is
  /// in the cache: sorting 200,000 names spent half its time reading them again.
  NameKey key;
};

}  // namespace safetensors::detail
