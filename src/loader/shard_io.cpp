#include "loader/shard_io.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "io/posix.hpp"
#include "safetensors/error.hpp"

namespace safetensors::detail {
namespace {

// Files opened by path are named by their path; a name that is not a regular file (a memory
// source, a pipe) keeps using the Source. The size is not compared: a file that shrank after
// opening must fail with a short read here rather than fault through the File's mapping.
int open_same_file(const File& file, int extra_flags) {
  try {
    return open_regular_file(file.name(), extra_flags);
  } catch (const Error&) {
    return -1;
  }
}

// pread until `length` bytes are in; returns the count read, short only at end of file.
// Returns -1 with errno set on failure.
ssize_t pread_full(int fd, std::byte* out, std::size_t length, std::uint64_t offset) {
  std::size_t done = 0;
  while (done < length) {
    const ssize_t n = ::pread(fd, out + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  return static_cast<ssize_t>(done);
}

[[noreturn]] void short_read(const std::string& name, std::uint64_t offset, std::size_t length,
                             std::size_t got) {
  throw Error(ErrorCode::io, name + ": unexpected end of file reading " + std::to_string(length) +
                                 " bytes at offset " + std::to_string(offset) + " (got " +
                                 std::to_string(got) + "); did the file shrink?");
}

}  // namespace

ShardIo::ShardIo(const File& file, bool direct, bool map) : file_(&file) {
  fd_ = open_same_file(file, 0);
  if (direct && fd_ >= 0) direct_fd_ = open_same_file(file, O_DIRECT);
  if (map) map_file();
}

ShardIo::~ShardIo() {
  if (own_mapping_size_ != 0) ::munmap(const_cast<std::byte*>(mapping_), own_mapping_size_);
  if (direct_fd_ >= 0) ::close(direct_fd_);
  if (fd_ >= 0) ::close(fd_);
}

// A mapping of our own, so that the access advice cannot change how the caller's zero-copy
// views behave; the File's mapping is the fallback.
void ShardIo::map_file() {
  const std::size_t size = file_->source().size();
  if (fd_ >= 0 && size != 0) {
    void* base = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd_, 0);
    if (base != MAP_FAILED) {
      // Larger read-ahead on faults; it also drops the pages from this mapping behind us.
      ::madvise(base, size, MADV_SEQUENTIAL);
      mapping_ = static_cast<const std::byte*>(base);
      own_mapping_size_ = size;
      return;
    }
  }
  const std::span<const std::byte> mapped = file_->source().mapped();
  if (!mapped.empty()) mapping_ = mapped.data();
}

void ShardIo::prefetch(std::uint64_t offset, std::uint64_t length) const noexcept {
  if (!mapping_ || length == 0) return;
  const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  const std::uint64_t begin = offset / page * page;
  // Advice only: a failure just means no read-ahead.
  ::madvise(const_cast<std::byte*>(mapping_) + begin, offset + length - begin, MADV_WILLNEED);
}

void ShardIo::read(std::uint64_t offset, std::span<std::byte> out) const {
  if (fd_ < 0) return file_->source().read_at(offset, out);
  const ssize_t got = pread_full(fd_, out.data(), out.size(), offset);
  if (got < 0) throw_os_error(name(), "cannot read at offset " + std::to_string(offset), errno);
  if (static_cast<std::size_t>(got) != out.size()) {
    short_read(name(), offset, out.size(), static_cast<std::size_t>(got));
  }
}

std::span<const std::byte> ShardIo::read_direct(std::uint64_t offset, std::size_t length,
                                                std::span<std::byte> bounce) const {
  if (direct_fd_ >= 0 && !direct_refused_.load(std::memory_order_relaxed)) {
    const std::uint64_t begin = offset / direct_alignment * direct_alignment;
    const std::uint64_t end =
        (offset + length + direct_alignment - 1) / direct_alignment * direct_alignment;
    const std::size_t skip = static_cast<std::size_t>(offset - begin);
    const ssize_t got = pread_full(direct_fd_, bounce.data(), end - begin, begin);
    if (got >= 0) {
      // The last block of the file comes back short; only the requested bytes must be there.
      if (static_cast<std::size_t>(got) < skip + length) {
        short_read(name(), offset, length, got > static_cast<ssize_t>(skip) ? got - skip : 0);
      }
      return bounce.subspan(skip, length);
    }
    if (errno != EINVAL)
      throw_os_error(name(), "cannot read (O_DIRECT) at offset " + std::to_string(begin), errno);
    // Some file systems accept O_DIRECT at open and refuse the reads.
    direct_refused_.store(true, std::memory_order_relaxed);
  }
  read(offset, bounce.first(length));
  return bounce.first(length);
}

}  // namespace safetensors::detail
