// The index transformers writes beside safetensors shards: reading it strictly, checking
// the shard names it holds, and writing it byte for byte as transformers does.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "safetensors/header.hpp"

namespace safetensors::detail {

/// A parsed `*.safetensors.index.json`.
struct CheckpointIndex {
  /// String values of `metadata` other than `total_size`; nullopt when none are left, so an
  /// index that only records its size adds nothing to a merge of its shards' metadata.
  std::optional<Metadata> metadata;
  /// `metadata.total_size`, when the index has one.
  std::optional<std::uint64_t> total_size;
  /// (tensor, shard file) pairs sorted by tensor name; every name is unique.
  std::vector<std::pair<std::string, std::string>> weight_map;
};

/// Reads an index file whole. Throws not_regular_file or io like any input, and
/// invalid_index for a file over 1 GiB (real ones are a few megabytes), which keeps a
/// hostile "index" out of memory.
std::string read_checkpoint_index(const std::string& path);

/// Parses and checks the shape of an index. Throws `Error(invalid_index,
/// "<origin>: ...")` for malformed JSON, a missing or ill-typed `weight_map`, a duplicate key,
/// or a `total_size` that is not a non-negative integer.
[[nodiscard]] CheckpointIndex parse_checkpoint_index(std::string_view json,
                                                     std::string_view origin);

/// Why a shard name from an index may not be used as a path below the index's directory
/// (absolute, `..`, backslash, NUL, empty); empty when it is acceptable.
[[nodiscard]] std::string shard_name_problem(std::string_view name);

/// `json.dumps(index, indent=2, sort_keys=True) + "\n"` for {"metadata": metadata +
/// {"total_size": total_size}, "weight_map": weight_map}. Throws invalid_argument for a
/// name that is not UTF-8 or metadata that holds `total_size`.
[[nodiscard]] std::string checkpoint_index_json(
    const std::vector<std::pair<std::string, std::string>>& weight_map, std::uint64_t total_size,
    const std::optional<Metadata>& metadata);

}  // namespace safetensors::detail
