// The loader's own access to one shard: a buffered descriptor for pread, an O_DIRECT
// descriptor, and a mapping, each opened only for the method that needs it. Files that were
// not opened by path (memory sources) fall back to their Source.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "safetensors/file.hpp"

namespace safetensors::detail {

/// O_DIRECT needs the file offset, the length and the memory aligned to the logical block
/// size; 4096 covers every common device.
inline constexpr std::size_t direct_alignment = 4096;

class ShardIo {
 public:
  /// Opens a buffered descriptor always, an O_DIRECT one when `direct`, a mapping when `map`.
  ShardIo(const File& file, bool direct, bool map);
  ShardIo(const ShardIo&) = delete;
  ShardIo& operator=(const ShardIo&) = delete;
  ~ShardIo();

  const std::string& name() const noexcept { return file_->name(); }

  /// The whole file as memory when a mapping was asked for and could be made; else nullptr.
  const std::byte* mapping() const noexcept { return mapping_; }

  /// Starts reading [offset, offset + length) of the mapping into the page cache, so that a
  /// cold copy from it waits for one large request instead of many small page faults.
  void prefetch(std::uint64_t offset, std::uint64_t length) const noexcept;

  /// Fills `out` from file offset `offset` with buffered reads.
  void read(std::uint64_t offset, std::span<std::byte> out) const;

  /// Reads [offset, offset + length) with O_DIRECT into `bounce` (aligned to
  /// direct_alignment, at least length + 2 * direct_alignment bytes) and returns where the
  /// requested bytes landed. Falls back to a buffered read when the file system refuses.
  std::span<const std::byte> read_direct(std::uint64_t offset, std::size_t length,
                                         std::span<std::byte> bounce) const;

 private:
  void map_file();

  const File* file_;
  int fd_ = -1;
  int direct_fd_ = -1;
  mutable std::atomic<bool> direct_refused_{false};
  const std::byte* mapping_ = nullptr;
  std::size_t own_mapping_size_ = 0;  // nonzero when mapping_ is ours to unmap
};

}  // namespace safetensors::detail
