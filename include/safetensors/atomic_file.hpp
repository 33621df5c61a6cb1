// Crash-safe output files: the target path changes only when the new content is complete.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include "safetensors/export.hpp"

namespace safetensors {

/// A new file written beside its target and renamed over it on `commit`. Until then the
/// target is untouched; destroying an uncommitted AtomicFile deletes the temporary file.
/// Permissions follow the umask, as for any newly created file. The temporary
/// (`.<name>.tmp-<12 random [0-9a-z]>`) stays flock-ed by its writer until the rename; a new
/// AtomicFile for the same target deletes those whose lock is free, i.e. whose writer died
/// (SIGKILL, power loss) before it could clean up.
class SAFETENSORS_API AtomicFile {
 public:
  /// Creates the temporary file in the target's directory. Throws `Error` (io).
  explicit AtomicFile(std::filesystem::path target);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  /// Appends bytes. Throws `Error` (io) naming the target on a short or failed write.
  void write(std::span<const std::byte> bytes);
  /// Flushes data to disk, renames over the target and flushes the directory entry.
  void commit();

  const std::filesystem::path& target() const noexcept { return target_; }
  const std::filesystem::path& temp_path() const noexcept { return temp_; }

 private:
  std::filesystem::path target_;
  std::filesystem::path temp_;
  int fd_ = -1;
  bool committed_ = false;
  std::uint64_t written_ = 0;  // bytes written so far
  std::uint64_t flushed_ = 0;  // bytes whose writeback has been started

  void start_writeback() noexcept;
};

}  // namespace safetensors
