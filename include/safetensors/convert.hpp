// Converting PyTorch and numpy checkpoints to safetensors without running any code.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>
#include "safetensors/export.hpp"

namespace safetensors {

struct SAFETENSORS_API ConvertOptions {
  /// Key of the weights in a training checkpoint; empty = `state_dict` when present.
  std::string state_dict_key;
  /// Called with (bytes done, bytes total) while tensor data is copied.
  std::function<void(std::uint64_t, std::uint64_t)> progress;
};

/// What a conversion did, for people (`--json` in the CLI) and for tests.
struct SAFETENSORS_API ConvertReport {
  std::string input_format;  // "torch-zip", "torch-legacy", "npy", "npz", "torch-sharded"
  std::vector<std::filesystem::path> outputs;
  std::vector<std::string> tensors;                               // names written, sorted
  std::vector<std::pair<std::string, std::string>> deduplicated;  // removed -> kept
  std::vector<std::string> dropped;                               // non-tensor values, with notes
  std::uint64_t bytes_written = 0;
};

/// Converts one checkpoint file (format detected from its bytes) to `output`. The output is
/// verified against the source before it atomically appears; on any error no file appears.
SAFETENSORS_API ConvertReport convert_file(const std::filesystem::path& input,
                                           const std::filesystem::path& output,
                                           const ConvertOptions& options = {});

/// Converts a model directory: pytorch_model.bin -> model.safetensors, or a sharded set with
/// pytorch_model.bin.index.json -> shards with model.safetensors.index.json.
SAFETENSORS_API ConvertReport convert_directory(const std::filesystem::path& directory,
                                                const ConvertOptions& options = {});

}  // namespace safetensors
