#include "safetensors/header.hpp"

#include <algorithm>
#include <numeric>
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

std::string tensor_label(const TensorInfo& tensor) {
  return "tensor " + quote(tensor.name) + ": data_offsets [" + std::to_string(tensor.data_begin) +
         ", " + std::to_string(tensor.data_end) + ")";
}

// Rule 6 for tensor names, reporting whichever duplicate comes first in the header.
void check_unique(const detail::JsonHeader& json, const detail::NameOrder& by_name,
                  std::string_view origin) {
  std::size_t first_offset = json.duplicate_offset;
  std::string message = json.duplicate_message;
  for (std::uint32_t place : by_name.repeats) {
    const std::uint32_t index = by_name.order[place];
    if (json.key_offsets[index] < first_offset) {
      first_offset = json.key_offsets[index];
      message = "tensor " + quote(json.tensors[index].name) + " appears twice";
    }
  }
  if (first_offset != detail::JsonHeader::no_duplicate) {
    fail(ErrorCode::duplicate_key, origin, message);
  }
}

// Indices of `tensors` in data order: by (begin, end), ties by name. Writers usually list
// tensors in this order already, which the check before sorting makes cheap.
std::vector<std::uint32_t> order_by_data(const std::vector<TensorInfo>& tensors,
                                         std::span<const std::uint32_t> by_name) {
  struct Placed {
    std::uint64_t begin;
    std::uint64_t end;
    std::uint32_t name_rank;
    std::uint32_t index;
  };
  std::vector<Placed> placed(tensors.size());
  for (std::uint32_t rank = 0; rank < by_name.size(); ++rank) {
    const TensorInfo& tensor = tensors[by_name[rank]];
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
bool listed_in_data_order(const std::vector<TensorInfo>& tensors) {
  for (std::size_t i = 1; i < tensors.size(); ++i) {
    const TensorInfo& a = tensors[i - 1];
    const TensorInfo& b = tensors[i];
    if (std::tie(a.data_begin, a.data_end) >= std::tie(b.data_begin, b.data_end)) return false;
  }
  return true;
}

// Moves items[order[i]] to items[i] for every i, in place: a second vector would double the
// memory of the biggest part of the result. Leaves `order` as the identity.
void permute(std::vector<TensorInfo>& items, std::vector<std::uint32_t>& order) {
  for (std::uint32_t start = 0; start < order.size(); ++start) {
    if (order[start] == start) continue;
    TensorInfo held = std::move(items[start]);
    std::uint32_t to = start;
    while (order[to] != start) {
      std::uint32_t from = order[to];
      items[to] = std::move(items[from]);
      order[to] = to;
      to = from;
    }
    items[to] = std::move(held);
    order[to] = to;
  }
}

// Rules 7-10 for one tensor, given where the previous one ended.
void check_tensor(const TensorInfo& tensor, const TensorInfo* previous, std::string_view origin) {
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
  ByteSize size = byte_size(tensor.dtype, tensor.shape);
  auto what = [&] {
    return "tensor " + quote(tensor.name) + ": " + std::string(dtype_name(tensor.dtype)) +
           " shape " + detail::format_list(tensor.shape);
  };
  if (size.problem == SizeProblem::overflow) {
    fail(ErrorCode::overflow, origin, what() + " has more than 2^64-1 elements or bits");
  }
  if (size.problem == SizeProblem::misaligned) {
    std::uint64_t bits = tensor.element_count() * dtype_bits(tensor.dtype);  // fits: no overflow
    fail(ErrorCode::misaligned, origin,
         what() + " has " + std::to_string(bits) + " bits, not a whole number of bytes");
  }
  if (size.bytes != tensor.byte_count()) {
    fail(ErrorCode::size_mismatch, origin,
         what() + " needs " + std::to_string(size.bytes) + " bytes but data_offsets [" +
             std::to_string(tensor.data_begin) + ", " + std::to_string(tensor.data_end) +
             ") hold " + std::to_string(tensor.byte_count()));
  }
}

// Rule 11.
void check_buffer_end(const std::vector<TensorInfo>& tensors, std::uint64_t data_size,
                      std::string_view origin) {
  std::uint64_t end = tensors.empty() ? 0 : tensors.back().data_end;
  if (end == data_size) return;
  if (tensors.empty()) {
    fail(ErrorCode::buffer_size_mismatch, origin,
         "the header lists no tensors but the data buffer holds " + std::to_string(data_size) +
             " bytes");
  }
  if (end < data_size) {
    fail(ErrorCode::buffer_size_mismatch, origin,
         std::to_string(data_size - end) + " trailing bytes after the last tensor " +
             quote(tensors.back().name) + ", which ends at " + std::to_string(end));
  }
  fail(ErrorCode::buffer_size_mismatch, origin,
       "data buffer is " + std::to_string(end - data_size) + " bytes short: the last tensor " +
           quote(tensors.back().name) + " ends at " + std::to_string(end) +
           " but the buffer holds " + std::to_string(data_size) + " bytes (file truncated?)");
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

// parse_header, for a header followed by detail::json_padding readable bytes or not.
Header parse_any_header(std::span<const std::byte> header_json, std::uint64_t data_size,
                        std::string_view origin, bool padded) {
  detail::JsonHeader json = detail::read_header_json(header_json, origin, padded);
  detail::NameOrder names = detail::order_by_name(json.tensors, json.name_prefix);
  check_unique(json, names, origin);
  const std::vector<std::uint32_t>& by_name = names.order;
  const std::size_t count = json.tensors.size();
  Header header;
  header.name_order.reserve(count);
  if (listed_in_data_order(json.tensors)) {
    header.name_order.assign(by_name.begin(), by_name.end());
  } else {
    std::vector<std::uint32_t> by_data = order_by_data(json.tensors, by_name);
    std::vector<std::uint32_t> position(count);  // of each header-order tensor in data order
    for (std::uint32_t i = 0; i < count; ++i) position[by_data[i]] = i;
    permute(json.tensors, by_data);
    for (std::uint32_t index : by_name) header.name_order.push_back(position[index]);
  }
  for (std::size_t i = 0; i < count; ++i) {
    check_tensor(json.tensors[i], i > 0 ? &json.tensors[i - 1] : nullptr, origin);
  }
  check_buffer_end(json.tensors, data_size, origin);

  header.tensors = std::move(json.tensors);
  header.metadata = std::move(json.metadata);
  header.data_start = 8 + header_json.size();
  header.data_size = data_size;
  return header;
}

}  // namespace

Header parse_header(std::span<const std::byte> header_json, std::uint64_t data_size,
                    std::string_view origin) {
  return parse_any_header(header_json, data_size, origin, false);
}

Header detail::parse_padded_header(std::span<const std::byte> header_json, std::uint64_t data_size,
                                   std::string_view origin) {
  return parse_any_header(header_json, data_size, origin, true);
}

Header parse_file_header(std::span<const std::byte> file, std::string_view origin) {
  std::uint64_t length =
      parse_header_length(file.first(std::min<std::size_t>(8, file.size())), file.size(), origin);
  return parse_header(file.subspan(8, length), file.size() - 8 - length, origin);
}

}  // namespace safetensors
