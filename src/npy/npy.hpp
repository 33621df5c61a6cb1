// numpy's .npy header: a Python dict literal parsed by a small literal parser, never evaluated.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "safetensors/dtype.hpp"

namespace safetensors::detail::npy {

/// What the header of one .npy array says.
struct ArrayHeader {
  Dtype dtype = Dtype::U8;
  bool big_endian = false;     // the data must be byte-swapped to little-endian
  bool fortran_order = false;  // the data must be transposed to C order
  std::vector<std::uint64_t> shape;
  std::uint64_t data_offset = 0;  // from the start of the .npy bytes
  std::uint64_t data_size = 0;    // product(shape) * element size, checked
  std::string descr;              // as written, for messages
};

/// True when `prefix` starts with the magic "\x93NUMPY".
[[nodiscard]] bool looks_like_npy(std::span<const std::byte> prefix) noexcept;

/// Where a header's text starts (10 bytes in for version 1, 12 for later ones) and the length
/// its first bytes give; nullopt when `prefix` is too short to hold that length. Nothing else
/// is checked, so readers that must get past a header parse_array_header refuses can still find
/// its end.
struct HeaderExtent {
  std::uint64_t text_start = 0;
  std::uint64_t text_length = 0;
};
std::optional<HeaderExtent> header_extent(std::span<const std::byte> prefix) noexcept;

/// Parses versions 1.0, 2.0 and 3.0. `prefix` must hold at least the whole header (the
/// first 10 or 12 bytes say how long it is); `total_size` is the size of the .npy bytes.
/// Refuses object arrays (`|O`: the payload would be a pickle), structured and
/// unsupported dtypes (complex128, datetime, strings) naming the descr, data shorter or
/// longer than the shape needs, and malformed literals. Errors name `origin`.
[[nodiscard]] ArrayHeader parse_array_header(std::span<const std::byte> prefix,
                                             std::uint64_t total_size, std::string_view origin);

/// Converts `data` (exactly header.data_size bytes) in place-free fashion into C-order
/// little-endian bytes in `out` (same size): byte swaps and/or transposes as the header
/// requires; a plain copy otherwise.
void to_c_order_little_endian(const ArrayHeader& header, std::span<const std::byte> data,
                              std::span<std::byte> out);

}  // namespace safetensors::detail::npy
