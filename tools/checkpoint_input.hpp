// Inputs of the `safetensors` command that may be sharded checkpoints (a directory or an
// index) as well as single files, and the union of several inputs' tensors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "safetensors/checkpoint.hpp"

namespace safetensors::cli {

/// True for a directory or a `*.json` index: paths `Checkpoint::open` reads as a checkpoint
/// rather than as one safetensors file.
bool is_checkpoint_path(const std::string& path);

/// How a shard is shown: its path relative to the index's directory.
std::string shard_label(const Checkpoint& checkpoint, const File& file);

/// Throws invalid_argument when writing `output` (a file, or a directory for shards) would
/// replace one of the inputs' files.
void refuse_overwriting_inputs(std::span<const Checkpoint> inputs, const std::string& output,
                               bool output_is_directory);

/// The union of several checkpoints' tensors and metadata: a tensor name in two inputs, or a
/// metadata key with two values, is an error naming both files. Tensor bytes stay in the
/// inputs' mappings (or copies where a file is not mapped) and metadata is borrowed, so the
/// checkpoints added must outlive the union, in place (an index's metadata lives in the
/// Checkpoint object), and memory use does not grow with the data or the metadata.
class TensorUnion {
 public:
  /// An index's own metadata joins its shards' metadata.
  void add(const Checkpoint& checkpoint);

  const std::vector<TensorData>& tensors() const noexcept { return tensors_; }
  /// The union of the inputs' metadata; nullptr when no input has any. Borrowed from the
  /// input when only one has metadata, so a huge map is never copied.
  const Metadata* metadata() const;
  std::uint64_t bytes() const noexcept { return bytes_; }
  std::size_t files() const noexcept { return files_; }

 private:
  void add_metadata(const std::optional<Metadata>& metadata, const std::string& origin);

  struct MetadataSource {
    const Metadata* metadata;
    std::string origin;
  };

  std::vector<TensorData> tensors_;
  std::vector<MetadataSource> metadata_sources_;
  mutable std::optional<Metadata> merged_metadata_;  // built on demand from several sources
  std::deque<std::vector<std::byte>> copies_;
  // Names and files live in the checkpoints, which outlive the union.
  std::map<std::string_view, const File*> tensor_origin_;
  std::uint64_t bytes_ = 0;
  std::size_t files_ = 0;
};

}  // namespace safetensors::cli
