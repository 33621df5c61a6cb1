// libFuzzer target for the checkpoint index (`model.safetensors.index.json`): any input is
// parsed as an index; only safetensors::Error may escape. An accepted index must hold what
// the parser promises (unique tensors in name order, no `total_size` among the metadata), must
// be written back by the index writer and read again unchanged, and every shard name must
// get the path verdict a plain re-implementation of the rule gives.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "../src/checkpoint/index.hpp"
#include "require.hpp"
#include "safetensors/error.hpp"

namespace {

using fuzz::require;

// Not empty, no NUL, no backslash, not absolute, no `..` component.
bool acceptable_shard_name(std::string_view name) {
  if (name.empty() || name.find('\0') != name.npos || name.find('\\') != name.npos ||
      name.front() == '/') {
    return false;
  }
  std::string component;
  for (const char c : std::string(name) + "/") {
    if (c != '/') {
      component += c;
      continue;
    }
    if (component == "..") return false;
    component.clear();
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace detail = safetensors::detail;
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  detail::CheckpointIndex index;
  try {
    index = detail::parse_checkpoint_index(json, "fuzz.index.json");
  } catch (const safetensors::Error& e) {
    require(e.code() == safetensors::ErrorCode::invalid_index,
            "a bad index failed with another error than invalid_index");
    return 0;
  }
  for (std::size_t i = 1; i < index.weight_map.size(); ++i) {
    require(index.weight_map[i - 1].first < index.weight_map[i].first,
            "weight_map is not in name order or repeats a tensor");
  }
  if (index.metadata) {
    require(!index.metadata->empty(), "an empty metadata is reported as present");
    require(!index.metadata->count("total_size"), "total_size is left among the metadata");
  }
  for (const auto& [tensor, shard] : index.weight_map) {
    require(detail::shard_name_problem(shard).empty() == acceptable_shard_name(shard),
            "shard_name_problem disagrees with the path rule");
  }

  // What was read is written again (the parser checked the strings are UTF-8) and reads back.
  const std::string written =
      detail::checkpoint_index_json(index.weight_map, index.total_size.value_or(0), index.metadata);
  const detail::CheckpointIndex again = detail::parse_checkpoint_index(written, "rewritten");
  require(again.weight_map == index.weight_map, "weight_map changed in a write and read");
  require(again.metadata == index.metadata, "metadata changed in a write and read");
  require(again.total_size == index.total_size.value_or(0), "total_size changed");
  require(
      detail::checkpoint_index_json(again.weight_map, *again.total_size, again.metadata) == written,
      "writing is not deterministic");
  return 0;
}
