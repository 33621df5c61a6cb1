// Random-access byte sources: the only place the library touches the operating system
// for reading. Format code sees `Source` and nothing else.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include "safetensors/export.hpp"

namespace safetensors {

/// Read-only random access to a sequence of bytes. Implementations are safe to use from
/// many threads at once.
class SAFETENSORS_API Source {
 public:
  virtual ~Source() = default;

  /// Total length in bytes, fixed for the life of the source.
  virtual std::uint64_t size() const noexcept = 0;

  /// Fills `out` with the bytes at [offset, offset + out.size()). Throws `Error` (io) when
  /// the range is outside the source or the read fails.
  virtual void read_at(std::uint64_t offset, std::span<std::byte> out) const = 0;

  /// The whole source as memory when it is mapped or in memory; empty otherwise.
  virtual std::span<const std::byte> mapped() const noexcept { return {}; }

  /// A name for error messages (usually the path).
  virtual const std::string& name() const noexcept = 0;

  /// A read-only descriptor of the file behind the source, owned by the source and open for
  /// its life; -1 when the bytes are not a file's (memory). Lets bulk readers use pread(2) or
  /// O_DIRECT on the very file that was opened, never a file found again by name. Only for
  /// reading with pread: its flags and file offset must be left alone.
  virtual int descriptor() const noexcept { return -1; }

  /// Says that [offset, offset + size) will not be read again soon. A read-only mapping
  /// drops those pages from the process (the page cache keeps them), so streaming through
  /// a large file does not grow resident memory; other sources ignore it.
  virtual void release(std::uint64_t offset, std::uint64_t size) const noexcept {
    (void)offset;
    (void)size;
  }

  /// Bytes read from this source so far, by `read_at` and by the loader's bulk reads (every
  /// thread, every method); zero-copy views of a mapping are not reads and are not counted.
  /// What a load asked of the storage, for tests and benchmarks (e.g. each rank's share).
  std::uint64_t bytes_read() const noexcept { return bytes_read_.load(std::memory_order_relaxed); }
  /// Adds `bytes` to bytes_read(); for implementations and readers that bypass `read_at`.
  void count_read(std::uint64_t bytes) const noexcept {
    bytes_read_.fetch_add(bytes, std::memory_order_relaxed);
  }

 private:
  mutable std::atomic<std::uint64_t> bytes_read_{0};
};

/// Maps a file read-only (MAP_PRIVATE): zero-copy views, pages loaded on first touch.
/// Like every function here that opens a path, refuses anything but a regular file
/// (not_regular_file: FIFO, socket, device, directory) without blocking on it.
[[nodiscard]] SAFETENSORS_API std::unique_ptr<Source> open_mmap_source(
    const std::filesystem::path& path);

/// Like `open_mmap_source`, but the pages are also writable copy-on-write (PROT_READ |
/// PROT_WRITE, MAP_PRIVATE): a write through the mapping copies the page for this process and
/// never reaches the file. MAP_NORESERVE: only pages actually written are charged against the
/// commit limit, so a file larger than RAM + swap opens as any other. For bindings that hand the
/// memory to frameworks which assume tensors are writable (torch, numpy); `mapped()` stays const
/// for everyone else.
[[nodiscard]] SAFETENSORS_API std::unique_ptr<Source> open_writable_mmap_source(
    const std::filesystem::path& path);

/// Reads a file with pread(2); no mapping, so nothing is zero-copy.
[[nodiscard]] SAFETENSORS_API std::unique_ptr<Source> open_pread_source(
    const std::filesystem::path& path);

/// Borrows memory the caller keeps alive for the life of the source.
[[nodiscard]] SAFETENSORS_API std::unique_ptr<Source> make_memory_source(
    std::span<const std::byte> bytes, std::string name);

}  // namespace safetensors
