// Reading large ranges of one Source as the loader asks: pread(2) straight into the caller's
// memory, O_DIRECT through an aligned bounce buffer, or a mapping of its own read with
// read-ahead. All of it goes through the descriptor the Source already holds; a source
// without one (memory) is read through the Source itself.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "io/memory.hpp"
#include "io/posix.hpp"
#include "safetensors/source.hpp"

namespace safetensors::detail {

/// O_DIRECT needs the file offset, the length and the memory aligned to the logical block
/// size; 4096 covers every common device.
inline constexpr std::size_t direct_alignment = 4096;

class BulkReader {
 public:
  /// Opens an O_DIRECT descriptor when `direct`, a mapping when `map`; `source` must outlive
  /// this.
  BulkReader(const Source& source, bool direct, bool map);

  const std::string& name() const noexcept { return source_->name(); }

  /// The whole source as memory when a mapping was asked for and could be made; else nullptr.
  const std::byte* mapping() const noexcept { return mapping_; }

  /// Starts reading [offset, offset + length) of the mapping into the page cache, so that a
  /// cold copy from it waits for one large request instead of many small page faults.
  void prefetch(std::uint64_t offset, std::uint64_t length) const noexcept;

  /// Counts `length` bytes copied out of the mapping as read from the source
  /// (Source::bytes_read).
  void count_mapped(std::uint64_t length) const noexcept { source_->count_read(length); }

  /// The source's own (buffered) descriptor; -1 for a source without one (memory).
  int descriptor() const noexcept { return source_->descriptor(); }
  /// The O_DIRECT descriptor when one was opened (BulkReader's `direct`), else -1; for readers
  /// outside this class (GPUDirect Storage, device/gds.hpp), which align their own requests.
  int direct_descriptor() const noexcept { return direct_fd_.is_open() ? direct_fd_.get() : -1; }
  /// Counts `length` bytes read through these descriptors by someone else (device reads) as
  /// read from the source.
  void count_external(std::uint64_t length) const noexcept { source_->count_read(length); }

  /// Fills `out` from offset `offset` with buffered reads.
  void read(std::uint64_t offset, std::span<std::byte> out) const;

  /// Reads [offset, offset + length) with O_DIRECT into `bounce` (aligned to
  /// direct_alignment, at least length + 2 * direct_alignment bytes) and returns where the
  /// requested bytes landed. Falls back to a buffered read when the file system refuses.
  std::span<const std::byte> read_direct(std::uint64_t offset, std::size_t length,
                                         std::span<std::byte> bounce) const;

 private:
  const Source* source_;
  FileDescriptor direct_fd_;
  mutable std::atomic<bool> direct_refused_{false};
  Mapping own_mapping_;
  const std::byte* mapping_ = nullptr;
};

}  // namespace safetensors::detail
