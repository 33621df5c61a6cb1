#include "loader/parts.hpp"

#include <algorithm>
#include <string>

#include "error/messages.hpp"
#include "safetensors/error.hpp"

namespace safetensors::detail {

std::string generic_name(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  std::size_t at = 0;
  for (;;) {
    const std::size_t dot = std::min(name.find('.', at), name.size());
    const std::string_view part = name.substr(at, dot - at);
    const bool number =
        at > 0 && !part.empty() &&
        std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    out += number ? std::string_view("*") : part;
    if (dot == name.size()) break;
    out += '.';
    at = dot + 1;
  }
  return out;
}

std::vector<std::uint64_t> sliced_shape(std::string_view origin, const TensorInfo& info,
                                        const TensorSlice& slice) {
  const auto bad = [&](const std::string& why) {
    fail(ErrorCode::invalid_slice, origin,
         "cannot load a part of tensor " + quote(info.name) + " of shape " +
             format_list(info.shape) + ": " + why);
  };
  if (slice.dim >= info.shape.size()) {
    bad("it has no dimension " + std::to_string(slice.dim));
  }
  const std::uint64_t size = info.shape[slice.dim];
  for (const TensorSlice::Range& range : slice.ranges) {
    if (range.begin > range.end || range.end > size) {
      bad("the range [" + std::to_string(range.begin) + ", " + std::to_string(range.end) +
          ") does not fit dimension " + std::to_string(slice.dim) + " of size " +
          std::to_string(size));
    }
  }
  std::vector<std::uint64_t> shape = info.shape;
  shape[slice.dim] = slice.length();
  const unsigned bits = dtype_bits(info.dtype);
  if (bits % 8 != 0) {
    std::uint64_t inner = bits;
    for (std::size_t d = slice.dim + 1; d < info.shape.size(); ++d) inner *= info.shape[d];
    bool aligned = slice.dim == 0 || (size * inner) % 8 == 0;
    for (const TensorSlice::Range& range : slice.ranges) {
      aligned = aligned && (range.begin * inner) % 8 == 0 && (range.end * inner) % 8 == 0;
    }
    if (!aligned) {
      bad(std::string(dtype_name(info.dtype)) + " packs " + std::to_string(bits) +
          "-bit elements and a run of this part would not start or end on a byte");
    }
  }
  return shape;
}

}  // namespace safetensors::detail
