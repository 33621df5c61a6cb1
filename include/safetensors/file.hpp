// A safetensors file opened for reading: the validated header plus access to tensor bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "safetensors/export.hpp"
#include "safetensors/header.hpp"
#include "safetensors/slice.hpp"
#include "safetensors/source.hpp"

namespace safetensors {

/// How `File::open` reads the file.
enum class Backend : std::uint8_t {
  mmap,   // map the file; tensor views are zero-copy
  pread,  // positional reads into caller memory; no mapping
};

/// A tensor's validated description and its bytes inside the mapping.
struct SAFETENSORS_API TensorView {
  const TensorInfo* info = nullptr;
  std::span<const std::byte> data;

  const std::string& name() const noexcept { return info->name; }
  Dtype dtype() const noexcept { return info->dtype; }
  const std::vector<std::uint64_t>& shape() const noexcept { return info->shape; }
};

/// An open, validated safetensors file. Opening reads only the 8-byte prefix and the
/// header. Copies share the same underlying source; every const member may be called from
/// many threads at once.
class SAFETENSORS_API File {
 public:
  /// Opens and validates `path`. Throws `Error` naming the file and the rule broken.
  [[nodiscard]] static File open(const std::filesystem::path& path,
                                 Backend backend = Backend::mmap);

  /// Checks `path` as `open` does, keeping nothing: for a caller that needs only the verdict,
  /// which then costs a fraction of the memory and time for a header of many tensors. Returns
  /// the number of tensors; throws `Error` naming the file and the rule broken.
  [[nodiscard]] static std::size_t validate(const std::filesystem::path& path);

  /// Validates a file held by any source (memory buffer, custom reader).
  [[nodiscard]] static File from_source(std::shared_ptr<const Source> source);

  /// The path or source name used in messages.
  const std::string& name() const noexcept;
  const Header& header() const noexcept;
  const std::optional<Metadata>& metadata() const noexcept;
  const Source& source() const noexcept;

  /// Number of tensors.
  std::size_t size() const noexcept;
  /// Tensors in data (offset) order.
  std::span<const TensorInfo> tensors() const noexcept;
  /// Tensors in name order (bytewise ascending).
  std::vector<const TensorInfo*> tensors_by_name() const;

  /// nullptr when the file has no tensor called `name`.
  const TensorInfo* find(std::string_view name) const noexcept;
  /// Throws `Error` (tensor_not_found) naming the file and the tensor.
  const TensorInfo& info(std::string_view name) const;

  /// True when tensor bytes are mapped, so `view` is available.
  bool zero_copy() const noexcept;
  /// Reads every page of the tensor data into memory now, in parallel (`threads`, 0: the
  /// library's default), at the speed of a sequential read of the file: later views cost no
  /// I/O and no page fault. For callers that will read everything; does nothing when the
  /// source is not mapped. Throws `Error` (io) when the data cannot be read.
  void populate(unsigned threads = 0) const;
  /// populate() for these tensors of this file only (TensorInfo of `tensors()`), with the
  /// small gaps between them; throws `Error` (invalid_argument) for one of another file.
  void populate(std::span<const TensorInfo* const> selected, unsigned threads = 0) const;
  /// The populates above, calling `progress` (bytes read, bytes in all) on the calling
  /// thread after each step of at most 32 MiB it reads, so that a long read can be reported
  /// or stopped: an exception from `progress` stops every worker after its current step and
  /// leaves populate.
  void populate(unsigned threads,
                const std::function<void(std::uint64_t, std::uint64_t)>& progress) const;
  void populate(std::span<const TensorInfo* const> selected, unsigned threads,
                const std::function<void(std::uint64_t, std::uint64_t)>& progress) const;
  /// Zero-copy view; throws `Error` (invalid_argument) on a source that is not mapped.
  TensorView view(std::string_view name) const;
  TensorView view(const TensorInfo& info) const;

  /// Copies a tensor's bytes into `out`, which must be exactly its byte count.
  void read(const TensorInfo& info, std::span<std::byte> out) const;
  void read(std::string_view name, std::span<std::byte> out) const;
  /// Returns an owned copy of a tensor's bytes.
  std::vector<std::byte> read(std::string_view name) const;

  /// Slices a tensor; zero-copy when the selection is contiguous and the file is mapped.
  SlicedTensor slice(std::string_view name, std::span<const SliceArg> args) const;

 private:
  struct State;
  explicit File(std::shared_ptr<const State> state) : state_(std::move(state)) {}
  std::shared_ptr<const State> state_;
};

}  // namespace safetensors
