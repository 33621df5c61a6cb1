#include "safetensors/header.hpp"

#include <algorithm>
#include <tuple>
#include <utility>

#include "encoding/little_endian.hpp"
#include "error/messages.hpp"
#include "format/header_json.hpp"
#include "format/header_names.hpp"
#include "safetensors/error.hpp"

namespace safetensors {
namespace {

using detail::fail;
using detail::quote;

using detail::JsonHeader;
using detail::TensorEntry;

std::string tensor_label(const TensorEntry& tensor) {
  return "tensor " + quote(tensor.name) + ": data_offsets [" + std::to_string(tensor.data_begin) +
         ", " + std::to_string(tensor.data_end) + ")";
}

// Rule 6 for tensor names, reporting whichever duplicate comes first in the header.
void check_unique(const JsonHeader& json, const detail::NameOrder& by_name,
                  std::string_view origin) {
  std::size_t first_offset = json.duplicate_offset;
  std::string message = json.duplicate_message;
  for (std::uint32_t place : by_name.repeats) {
    const TensorEntry& tensor = json.tensors[by_name.order[place]];
    if (tensor.key_at < first_offset) {
      first_offset = tensor.key_at;
      message = "tensor " + quote(tensor.name) + " appears twice";
    }
  }
  if (first_offset != JsonHeader::no_duplicate) {
    fail(ErrorCode::duplicate_key, origin, message);
  }
}

// Indices of `tensors` in data order: by (begin, end), ties by name.
std::vector<std::uint32_t> order_by_data(std::span<const TensorEntry> tensors,
                                         std::span<const std::uint32_t> by_name) {
  struct Placed {
    std::uint64_t begin;
    std::uint64_t end;
    std::uint32_t name_rank;
    std::uint32_t index;
  };
  std::vector<Placed> placed(tensors.size());
  for (std::uint32_t rank = 0; rank < by_name.size(); ++rank) {
    const TensorEntry& tensor = tensors[by_name[rank]];
    placed[by_name[rank]] = {tensor.data_begin, tensor.data_end, rank, by_name[rank]};
  }
  auto less = [](const Placed& a, const Placed& b) {
    return std::tie(a.begin, a.end, a.name_rank) < std::tie(b.begin, b.end, b.name_rank);
  };
  if (!std::is_sorted(placed.begin(), placed.end(), less)) {
    std::sort(placed.begin(), placed.end(), less);
  }
  std::vector<std::uint32_t> order(placed.size());
  for (std::size_t i = 0; i < placed.size(); ++i) order[i] = placed[i].index;
  return order;
}

// Whether the header lists its tensors in data order already, as writers do: every (begin, end)
// above the one before, so no tie needs the names and order_by_data would change nothing.
bool listed_in_data_order(std::span<const TensorEntry> tensors) {
  for (std::size_t i = 1; i < tensors.size(); ++i) {
    const TensorEntry& a = tensors[i - 1];
    const TensorEntry& b = tensors[i];
    if (std::tie(a.data_begin, a.data_end) >= std::tie(b.data_begin, b.data_end)) return false;
  }
  return true;
}

// Rules 7-10 for one tensor, given where the previous one ended.
void check_tensor(const JsonHeader& json, const TensorEntry& tensor, const TensorEntry* previous,
                  std::string_view origin) {
  std::uint64_t expected_begin = previous ? previous->data_end : 0;
  if (tensor.data_begin != expected_begin) {
    std::string problem;
    if (!previous) {
      problem = "does not start at 0 (leading gap)";
    } else if (tensor.data_begin > expected_begin) {
      problem = "start " + std::to_string(tensor.data_begin - expected_begin) +
                " bytes after the previous tensor " + quote(previous->name) + " ends (hole)";
    } else {
      problem = "overlaps the previous tensor " + quote(previous->name) + " which ends at " +
                std::to_string(expected_begin);
    }
    fail(ErrorCode::invalid_offsets, origin, tensor_label(tensor) + " " + problem);
  }
  if (tensor.data_end < tensor.data_begin) {
    fail(ErrorCode::invalid_offsets, origin, tensor_label(tensor) + " end before they begin");
  }
  const std::span<const std::uint64_t> shape = json.shape(tensor);
  ByteSize size = byte_size(tensor.dtype, shape);
  auto what = [&] {
    return "tensor " + quote(tensor.name) + ": " + std::string(dtype_name(tensor.dtype)) +
           " shape " + detail::format_list(shape);
  };
  if (size.problem == SizeProblem::overflow) {
    fail(ErrorCode::overflow, origin, what() + " has more than 2^64-1 elements or bits");
  }
  if (size.problem == SizeProblem::misaligned) {
    // byte_size found no overflow, so neither the count nor the product overflows.
    std::uint64_t bits = element_count(shape).value_or(0) * dtype_bits(tensor.dtype);
    fail(ErrorCode::misaligned, origin,
         what() + " has " + std::to_string(bits) + " bits, not a whole number of bytes");
  }
  const std::uint64_t held = tensor.data_end - tensor.data_begin;
  if (size.bytes != held) {
    fail(ErrorCode::size_mismatch, origin,
         what() + " needs " + std::to_string(size.bytes) + " bytes but data_offsets [" +
             std::to_string(tensor.data_begin) + ", " + std::to_string(tensor.data_end) +
             ") hold " + std::to_string(held));
  }
}

// Rule 11, given the tensor that ends last (null when there are none).
void check_buffer_end(const TensorEntry* last, std::uint64_t data_size, std::string_view origin) {
  std::uint64_t end = last ? last->data_end : 0;
  if (end == data_size) return;
  if (!last) {
    fail(ErrorCode::buffer_size_mismatch, origin,
         "the header lists no tensors but the data buffer holds " + std::to_string(data_size) +
             " bytes");
  }
  if (end < data_size) {
    fail(ErrorCode::buffer_size_mismatch, origin,
         std::to_string(data_size - end) + " trailing bytes after the last tensor " +
             quote(last->name) + ", which ends at " + std::to_string(end));
  }
  fail(ErrorCode::buffer_size_mismatch, origin,
       "data buffer is " + std::to_string(end - data_size) + " bytes short: the last tensor " +
           quote(last->name) + " ends at " + std::to_string(end) + " but the buffer holds " +
           std::to_string(data_size) + " bytes (file truncated?)");
}

}  // namespace

std::uint64_t TensorInfo::element_count() const noexcept {
  return safetensors::element_count(shape).value_or(0);
}

std::uint64_t parse_header_length(std::span<const std::byte> prefix, std::uint64_t file_size,
                                  std::string_view origin) {
  if (file_size < 8) {
    fail(ErrorCode::header_too_small, origin,
         "file is " + std::to_string(file_size) + " bytes, too small for the 8-byte header length");
  }
  if (prefix.size() < 8) {
    fail(ErrorCode::invalid_argument, origin,
         "parse_header_length needs the first 8 bytes, got " + std::to_string(prefix.size()));
  }
  const auto length = detail::load_le<std::uint64_t>(prefix);
  if (length > max_header_size) {
    fail(ErrorCode::header_too_large, origin,
         "header length " + std::to_string(length) + " exceeds the limit of " +
             std::to_string(max_header_size) + " bytes");
  }
  if (length > file_size - 8) {
    fail(ErrorCode::invalid_header_length, origin,
         "header length " + std::to_string(length) + " runs past the end of the file (" +
             std::to_string(file_size) + " bytes)");
  }
  return length;
}

namespace {

// A header that passed rules 4-11, as read, with the orders of its tensors.
struct CheckedHeader {
  JsonHeader json;
  /// Indices of json.tensors in name order.
  std::vector<std::uint32_t> by_name;
  /// Indices of json.tensors in data order; empty when the header lists them so.
  std::vector<std::uint32_t> by_data;

  const TensorEntry& in_data_order(std::size_t i) const {
    return json.tensors[by_data.empty() ? i : by_data[i]];
  }
};

// Rules 4-11 on a header followed by detail::json_padding readable bytes or not.
CheckedHeader check_any_header(std::span<const std::byte> header_json, std::uint64_t data_size,
                               std::string_view origin, bool padded) {
  CheckedHeader checked{detail::read_header_json(header_json, origin, padded), {}, {}};
  const JsonHeader& json = checked.json;
  detail::NameOrder names = detail::order_by_name(json.tensors, json.name_prefix);
  check_unique(json, names, origin);
  checked.by_name = std::move(names.order);
  if (!listed_in_data_order(json.tensors)) {
    checked.by_data = order_by_data(json.tensors, checked.by_name);
  }
  const std::size_t count = json.tensors.size();
  for (std::size_t i = 0; i < count; ++i) {
    check_tensor(json, checked.in_data_order(i), i > 0 ? &checked.in_data_order(i - 1) : nullptr,
                 origin);
  }
  check_buffer_end(count > 0 ? &checked.in_data_order(count - 1) : nullptr, data_size, origin);
  return checked;
}

// The public result of a checked header: its tensors in data order, each with a name and a
// shape of its own.
Header make_header(CheckedHeader checked, std::uint64_t header_size, std::uint64_t data_size) {
  JsonHeader& json = checked.json;
  const std::size_t count = json.tensors.size();
  Header header;
  header.tensors.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    const TensorEntry& entry = checked.in_data_order(i);
    const std::span<const std::uint64_t> shape = json.shape(entry);
    header.tensors.push_back({std::string(entry.name), entry.dtype,
                              std::vector<std::uint64_t>(shape.begin(), shape.end()),
                              entry.data_begin, entry.data_end});
  }
  header.name_order.reserve(count);
  if (checked.by_data.empty()) {
    header.name_order.assign(checked.by_name.begin(), checked.by_name.end());
  } else {
    std::vector<std::uint32_t> position(count);  // of each header-order tensor in data order
    for (std::uint32_t i = 0; i < count; ++i) position[checked.by_data[i]] = i;
    for (std::uint32_t index : checked.by_name) header.name_order.push_back(position[index]);
  }
  header.metadata = std::move(json.metadata);
  header.data_start = 8 + header_size;
  header.data_size = data_size;
  return header;
}

}  // namespace

Header parse_header(std::span<const std::byte> header_json, std::uint64_t data_size,
                    std::string_view origin) {
  return make_header(check_any_header(header_json, data_size, origin, false), header_json.size(),
                     data_size);
}

Header detail::parse_padded_header(std::span<const std::byte> header_json, std::uint64_t data_size,
                                   std::string_view origin) {
  return make_header(check_any_header(header_json, data_size, origin, true), header_json.size(),
                     data_size);
}

std::size_t validate_header(std::span<const std::byte> header_json, std::uint64_t data_size,
                            std::string_view origin) {
  return check_any_header(header_json, data_size, origin, false).json.tensors.size();
}

std::size_t detail::validate_padded_header(std::span<const std::byte> header_json,
                                           std::uint64_t data_size, std::string_view origin) {
  return check_any_header(header_json, data_size, origin, true).json.tensors.size();
}

Header parse_file_header(std::span<const std::byte> file, std::string_view origin) {
  std::uint64_t length =
      parse_header_length(file.first(std::min<std::size_t>(8, file.size())), file.size(), origin);
  return parse_header(file.subspan(8, length), file.size() - 8 - length, origin);
}

}  // namespace safetensors
