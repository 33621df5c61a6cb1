// libFuzzer target for the strict zip reader: any input is opened as an archive over a memory
// source with small limits, and every entry is read, streamed and viewed. Only
// safetensors::Error may escape the reader, and what it accepts must be consistent: entries
// inside the input, unique names, reads of exactly the declared size. Anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "../src/zip/archive.hpp"
#include "require.hpp"
#include "safetensors/error.hpp"
#include "safetensors/source.hpp"

namespace {

using fuzz::require;

void check_entries(const safetensors::detail::zip::Archive& archive, std::size_t input_size) {
  std::set<std::string> names;
  for (const auto& e : archive.entries()) {
    require(names.insert(e.name).second, "duplicate name accepted");
    require(archive.find(e.name) == &e, "find() misses an entry");
    require(e.method == 0 || e.method == 8, "unsupported method accepted");
    require(e.data_offset <= input_size && input_size - e.data_offset >= e.compressed_size,
            "entry data outside the input");
    require(e.method != 0 || e.size == e.compressed_size, "stored sizes differ");
    std::vector<std::byte> read;
    try {
      read = archive.read(e);
    } catch (const safetensors::Error&) {
      continue;
    }
    require(read.size() == e.size, "read() size differs from the entry's size");
    std::vector<std::byte> streamed;
    archive.stream(e, [&](std::span<const std::byte> b) {
      require(b.size() <= (std::size_t{1} << 20), "stream chunk too large");
      streamed.insert(streamed.end(), b.begin(), b.end());
    });
    require(streamed == read, "stream() and read() disagree");
    const auto view = archive.stored_view(e);
    require(e.method != 0 || std::vector<std::byte>(view.begin(), view.end()) == read,
            "stored_view() and read() disagree");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  const auto source = safetensors::make_memory_source(bytes, "fuzz.zip");
  safetensors::detail::zip::Limits limits;
  limits.max_entries = 256;
  limits.max_inflated_size = std::uint64_t{4} << 20;
  limits.max_ratio = 200;
  for (const bool single_folder : {false, true}) {
    try {
      const auto archive = safetensors::detail::zip::Archive::open(*source, limits, single_folder);
      check_entries(archive, size);
    } catch (const safetensors::Error&) {
    }
  }
  return 0;
}
