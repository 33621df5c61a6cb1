// libFuzzer target for the header parser: any input must either be rejected with
// `safetensors::Error` or yield a header whose guarantees hold. Anything else (a crash, a
// sanitizer report, a leak, a broken guarantee) is a bug.
#include <simdjson.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "require.hpp"
#include "safetensors/error.hpp"
#include "safetensors/header.hpp"

namespace {

using fuzz::require;

// A second, fully validating JSON parser must agree that an accepted header is one JSON
// object. Its number parser refuses some valid numbers (beyond double or u64 range), which
// our parser may accept inside unknown fields; those inputs are not compared.
void check_json(std::span<const std::byte> json) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded(reinterpret_cast<const char*>(json.data()), json.size());
  simdjson::dom::element root;
  simdjson::error_code error = parser.parse(padded).get(root);
  if (error == simdjson::NUMBER_ERROR) return;
  require(!error, "simdjson's DOM parser rejects the header JSON");
  require(root.is_object(), "the header JSON is not an object");
}

void check(const safetensors::Header& header, std::span<const std::byte> json,
           std::uint64_t data_size) {
  require(header.data_start == 8 + json.size(), "data_start follows the header");
  require(header.data_size == data_size, "data_size is the buffer's");
  std::uint64_t end = 0;
  for (const safetensors::TensorInfo& tensor : header.tensors) {
    require(tensor.data_begin == end, "tensors are contiguous in data order");
    require(tensor.data_end >= tensor.data_begin, "end >= begin");
    safetensors::ByteSize size = safetensors::byte_size(tensor.dtype, tensor.shape);
    require(static_cast<bool>(size), "byte size is computable");
    require(size.bytes == tensor.byte_count(), "byte size matches data_offsets");
    end = tensor.data_end;
  }
  require(end == header.data_size, "the last tensor ends at the end of the data");
  require(header.name_order.size() == header.tensors.size(), "name_order covers every tensor");
  for (std::size_t i = 0; i < header.name_order.size(); ++i) {
    require(header.name_order[i] < header.tensors.size(), "name_order indices are in range");
    if (i > 0) {
      std::string_view previous = header.tensors[header.name_order[i - 1]].name;
      std::string_view current = header.tensors[header.name_order[i]].name;
      require(previous < current, "names are unique and name_order is sorted");
    }
  }
  check_json(json);
}

template <class Parse>
std::optional<safetensors::Header> attempt(Parse parse) {
  try {
    return parse();
  } catch (const safetensors::Error&) {
    return std::nullopt;
  }
}

// What a check of the header said: empty when it passed, else the error's code and message.
template <class Check>
std::string verdict(Check check) {
  try {
    (void)check();
  } catch (const safetensors::Error& error) {
    return std::string(safetensors::error_code_name(error.code())) + ": " + error.what();
  }
  return {};
}

}  // namespace

// Each input is read twice: as a whole file, and as an 8-byte data size followed by header
// JSON, so that mutations of the JSON need not keep a length prefix in step to get past
// rule 3.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data), size);
  if (auto header = attempt([&] { return safetensors::parse_file_header(input, "fuzz"); })) {
    require(header->data_start >= 8 && header->data_start <= size, "data_start in the file");
    check(*header, input.subspan(8, header->data_start - 8), size - header->data_start);
  }
  if (size < 8) return 0;
  std::uint64_t data_size = 0;
  for (int i = 7; i >= 0; --i) data_size = (data_size << 8) | data[i];
  std::span<const std::byte> json = input.subspan(8);
  const std::string parsed = verdict([&] {
    check(safetensors::parse_header(json, data_size, "fuzz"), json, data_size);
    return 0;
  });
  // Checking without the result must come to the same verdict, in the same words.
  require(parsed == verdict([&] { return safetensors::validate_header(json, data_size, "fuzz"); }),
          "validate_header and parse_header disagree");
  return 0;
}
