#include "checkpoint_input.hpp"

#include <fmt/core.h>

#include <filesystem>

#include "cli_common.hpp"
#include "safetensors/error.hpp"

namespace safetensors::cli {
namespace {

namespace fs = std::filesystem;

bool same_file(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  if (fs::equivalent(a, b, ec)) return true;
  // equivalent() needs both to exist; compare spellings for a not-yet-existing output.
  std::error_code ec_a, ec_b;
  const fs::path canonical_a = fs::weakly_canonical(a, ec_a);
  const fs::path canonical_b = fs::weakly_canonical(b, ec_b);
  return !ec_a && !ec_b && canonical_a == canonical_b;
}

fs::path directory_of(const fs::path& path) {
  return path.parent_path().empty() ? fs::path(".") : path.parent_path();
}

}  // namespace

bool is_checkpoint_path(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) || fs::path(path).extension() == ".json";
}

std::string shard_label(const Checkpoint& checkpoint, const File& file) {
  if (checkpoint.index_path().empty()) return file.name();
  return fs::path(file.name()).lexically_relative(directory_of(checkpoint.index_path())).string();
}

void refuse_overwriting_inputs(std::span<const Checkpoint> inputs, const std::string& output,
                               bool output_is_directory) {
  for (const Checkpoint& input : inputs) {
    for (const File& file : input.files()) {
      // Shards are written into the directory under names we do not know yet: any input
      // file there could be one of them.
      const bool clash = output_is_directory ? same_file(directory_of(file.name()), output)
                                             : same_file(file.name(), output);
      if (clash) {
        throw Error(ErrorCode::invalid_argument,
                    fmt::format("refusing to write {}: {}", output,
                                output_is_directory ? "it holds the input " + file.name()
                                                    : std::string("it is also an input")));
      }
    }
  }
}

void TensorUnion::add_metadata(const std::optional<Metadata>& metadata, const std::string& origin) {
  if (!metadata) return;
  // Checked against each earlier input in place: no map of every key to its origin.
  for (const MetadataSource& earlier : metadata_sources_) {
    for (const auto& [key, value] : *metadata) {
      const auto it = earlier.metadata->find(key);
      if (it != earlier.metadata->end() && it->second != value) {
        throw Error(
            ErrorCode::duplicate_key,
            fmt::format("metadata key {} is {} in {} but {} in {}", json_string(key),
                        json_string(it->second), earlier.origin, json_string(value), origin));
      }
    }
  }
  metadata_sources_.push_back({&*metadata, origin});
}

const Metadata* TensorUnion::metadata() const {
  if (metadata_sources_.empty()) return nullptr;
  if (metadata_sources_.size() == 1) return metadata_sources_.front().metadata;
  if (!merged_metadata_) {
    merged_metadata_.emplace();
    for (const MetadataSource& source : metadata_sources_) {
      merged_metadata_->insert(source.metadata->begin(), source.metadata->end());
    }
  }
  return &*merged_metadata_;
}

void TensorUnion::add(const Checkpoint& checkpoint) {
  if (!checkpoint.index_path().empty()) {
    add_metadata(checkpoint.metadata(), checkpoint.index_path().string());
  }
  for (const File& file : checkpoint.files()) add_metadata(file.metadata(), file.name());
  files_ += checkpoint.files().size();
  for (const CheckpointTensor& t : checkpoint.tensors()) {
    const TensorInfo& info = *t.info;
    auto [it, inserted] = tensor_origin_.emplace(info.name, t.file);
    if (!inserted) {
      throw Error(ErrorCode::duplicate_key,
                  fmt::format("tensor {} is in both {} and {}", json_string(info.name),
                              it->second->name(), t.file->name()));
    }
    std::span<const std::byte> bytes;
    if (t.file->zero_copy()) {
      bytes = t.file->view(info).data;
    } else {
      bytes = copies_.emplace_back(t.file->read(info.name));
    }
    tensors_.push_back(TensorData::from_bytes(info.name, info.dtype, info.shape, bytes));
    bytes_ += bytes.size();
  }
}

}  // namespace safetensors::cli
