// Sharded checkpoints: many safetensors files seen as one name space, as transformers
// writes them (`model-00001-of-00003.safetensors` + `model.safetensors.index.json`).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "safetensors/export.hpp"
#include "safetensors/file.hpp"
#include "safetensors/writer.hpp"

namespace safetensors {

/// The name of the index transformers writes beside safetensors shards.
inline constexpr std::string_view index_file_name = "model.safetensors.index.json";

/// One tensor of a checkpoint: the shard it lives in and its validated description.
struct SAFETENSORS_API CheckpointTensor {
  const File* file = nullptr;
  const TensorInfo* info = nullptr;
};

/// An opened checkpoint: a single file, or an index and every shard it names. Opening
/// validates each shard (docs/FORMAT.md) and that index and shards agree: every mapped tensor
/// exists in its shard, no tensor is in two shards, every shard tensor is mapped, and shard
/// names stay inside the directory. The index's `total_size` is kept, not checked
/// (declared_total_size).
/// Errors (`Error`, invalid_index or the shard's own code) name the index, the shard
/// and the tensor.
class SAFETENSORS_API Checkpoint {
 public:
  /// `path` is a directory (with `model.safetensors.index.json` or exactly one
  /// `*.safetensors`), an index file, or a single safetensors file.
  [[nodiscard]] static Checkpoint open(const std::filesystem::path& path,
                                       Backend backend = Backend::mmap);

  /// Empty (no files); use `open`. Copies share the shards' open files and point their
  /// tensors at their own `files()`.
  Checkpoint() = default;
  Checkpoint(const Checkpoint& other);
  Checkpoint& operator=(const Checkpoint& other);
  Checkpoint(Checkpoint&&) noexcept = default;
  Checkpoint& operator=(Checkpoint&&) noexcept = default;

  /// Shards in index order (one for a single file).
  const std::vector<File>& files() const noexcept { return files_; }
  /// Tensors in name order.
  std::span<const CheckpointTensor> tensors() const noexcept { return tensors_; }
  /// nullptr when absent.
  const CheckpointTensor* find(std::string_view name) const noexcept;
  /// The index's `metadata` object minus `total_size` (strings only; nullopt when nothing is
  /// left), else the single file's.
  const std::optional<Metadata>& metadata() const noexcept {
    // A single file's is not copied: it may hold a million keys.
    return index_path_.empty() && !files_.empty() ? files_.front().metadata() : metadata_;
  }
  /// Sum of every tensor's bytes.
  std::uint64_t total_bytes() const noexcept { return total_bytes_; }
  /// The index's `metadata.total_size` as written; nullopt without one (or without an index).
  /// It may differ from total_bytes(): writers disagree on what it counts (transformers: the
  /// tensors' bytes; mlx-lm: the shards' file sizes) and nothing reads tensors by it.
  std::optional<std::uint64_t> declared_total_size() const noexcept { return declared_total_size_; }
  /// The index file, empty for a single file.
  const std::filesystem::path& index_path() const noexcept { return index_path_; }

 private:
  std::vector<File> files_;
  std::vector<CheckpointTensor> tensors_;
  std::optional<Metadata> metadata_;
  std::uint64_t total_bytes_ = 0;
  std::optional<std::uint64_t> declared_total_size_;
  std::filesystem::path index_path_;
};

/// Parses a size such as "5GB" (5 * 10^9), "500MB", "2GiB" (2 * 2^30), "123" (bytes);
/// units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB, case-insensitive. Throws invalid_argument.
[[nodiscard]] SAFETENSORS_API std::uint64_t parse_size(std::string_view text);

struct SAFETENSORS_API ShardOptions {
  /// A shard is closed before a tensor that would make it exceed this; a tensor larger
  /// than the limit gets a shard of its own (tensors are never split), as transformers does.
  std::uint64_t max_shard_size = 5'000'000'000;
  /// Shard files are `<prefix>-00001-of-00003.safetensors`; a single shard is
  /// `<prefix>.safetensors` with no index, as transformers does.
  std::string prefix = "model";
  /// Metadata for every shard (e.g. {"format": "pt"}) and the header alignment.
  WriteOptions write;
};

/// Writes `tensors` into `directory` as shards plus `model.safetensors.index.json`, in the
/// canonical order (dtype rank, then name). Each file is written atomically, the index last.
/// Returns the paths written (shards, then the index). Throws invalid_argument, before
/// writing anything, when `directory` holds files an earlier write left that the new set
/// would not replace (`<prefix>-*-of-*.safetensors`, `<prefix>.safetensors` or the index).
SAFETENSORS_API std::vector<std::filesystem::path> write_sharded(
    const std::filesystem::path& directory, std::span<const TensorData> tensors,
    const ShardOptions& options = {});

}  // namespace safetensors
