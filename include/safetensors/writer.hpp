// Writing safetensors files byte-compatible with the reference writer (docs/FORMAT.md "Writing").
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "safetensors/dtype.hpp"
#include "safetensors/export.hpp"
#include "safetensors/header.hpp"

namespace safetensors {

/// Fills `out` with the tensor's bytes starting at byte `offset` within the tensor. Called
/// in increasing offset order with chunks of bounded size, so data can be streamed.
using Producer = std::function<void(std::uint64_t offset, std::span<std::byte> out)>;

/// One tensor to write: its bytes are either borrowed memory or produced on demand.
struct SAFETENSORS_API TensorData {
  std::string name;
  Dtype dtype = Dtype::U8;
  std::vector<std::uint64_t> shape;
  std::span<const std::byte> bytes;  // used when `producer` is empty
  Producer producer;

  static TensorData from_bytes(std::string name, Dtype dtype, std::vector<std::uint64_t> shape,
                               std::span<const std::byte> bytes) {
    return {std::move(name), dtype, std::move(shape), bytes, {}};
  }
  static TensorData from_producer(std::string name, Dtype dtype, std::vector<std::uint64_t> shape,
                                  Producer producer) {
    return {std::move(name), dtype, std::move(shape), {}, std::move(producer)};
  }
};

struct SAFETENSORS_API WriteOptions {
  /// Written as `__metadata__` (keys in sorted order) when present, even if empty.
  std::optional<Metadata> metadata;
  /// The header is padded with spaces so that 8 + N is a multiple of this; a power of two
  /// of at least 8 (e.g. 4096 for direct I/O). Tensors are never padded.
  std::uint64_t alignment = 8;
  /// When set, written instead of `metadata`, without copying it; it must outlive the call.
  /// Spares a copy of a large map (a merge of files with a million metadata keys).
  const Metadata* borrowed_metadata = nullptr;
  /// Called between chunks of at most 64 MiB of data; whatever it throws aborts the write
  /// (`write_file` then leaves no temporary file). Lets a binding stop a long save on Ctrl-C.
  std::function<void()> between_chunks;
};

/// Everything decided before a byte of data is written.
struct SAFETENSORS_API WritePlan {
  /// The complete file prefix: 8-byte little-endian N, the JSON header, the padding.
  std::string header;
  /// Indices into the input tensors in the order their data is written.
  std::vector<std::size_t> order;
  /// data_offsets of each input tensor (indexed like the input), relative to the data buffer.
  std::vector<std::uint64_t> begin;
  /// Total bytes of tensor data.
  std::uint64_t data_size = 0;

  std::uint64_t file_size() const noexcept { return header.size() + data_size; }
};

/// Checks the tensors and lays them out. Throws `Error`: duplicate_key (a name twice),
/// invalid_argument (a tensor named `__metadata__`, a bad alignment, a name or metadata that
/// is not UTF-8), nul_character (in a name or metadata), too_many_dimensions (rank above
/// max_rank), overflow, misaligned,
/// size_mismatch (borrowed bytes of the wrong length); each message names the tensor.
[[nodiscard]] SAFETENSORS_API WritePlan plan_write(std::span<const TensorData> tensors,
                                                   const WriteOptions& options = {});

/// Writes atomically: a temporary file in the same directory is filled, flushed to disk and
/// renamed over `path`, so `path` holds either the old file or the complete new one.
/// Memory use does not depend on the tensors' total size.
SAFETENSORS_API void write_file(const std::filesystem::path& path,
                                std::span<const TensorData> tensors,
                                const WriteOptions& options = {});

/// Writes the whole file into memory.
[[nodiscard]] SAFETENSORS_API std::vector<std::byte> write_to_buffer(
    std::span<const TensorData> tensors, const WriteOptions& options = {});

/// Streams the file to `sink`, which receives consecutive chunks of the output in order.
SAFETENSORS_API void write_to_sink(std::span<const TensorData> tensors, const WriteOptions& options,
                                   const std::function<void(std::span<const std::byte>)>& sink);

}  // namespace safetensors
