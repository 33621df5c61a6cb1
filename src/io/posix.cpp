#include "io/posix.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

#include "safetensors/error.hpp"

namespace safetensors::detail {
namespace {

// Linux transfers at most 0x7ffff000 bytes per read(2) or write(2); staying below keeps every
// call well-defined on any platform where ssize_t is 64 bits.
constexpr std::size_t max_transfer = std::size_t{1} << 30;

std::string_view type_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "a special file";
}

[[noreturn]] void not_regular(const std::string& path, mode_t mode) {
  throw Error(ErrorCode::not_regular_file,
              path + ": is " + std::string(type_of(mode)) + ", not a regular file");
}

// open(2), retried when a signal interrupts it (as on NFS or a FUSE file system).
FileDescriptor open_retrying(const char* path, int flags) noexcept {
  int fd;
  do {
    fd = ::open(path, flags);
  } while (fd < 0 && errno == EINTR);
  return FileDescriptor(fd);
}

}  // namespace

void throw_os_error(std::string_view name, std::string_view what, int err) {
  // std::system_category().message is thread-safe, unlike strerror.
  const std::error_code code(err, std::system_category());
  std::string message(name);
  message += ": ";
  message += what;
  message += ": ";
  message += code.message();
  throw Error(ErrorCode::io, message, code);
}

int last_os_error() noexcept {
  return errno;
}

FileDescriptor& FileDescriptor::operator=(FileDescriptor&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

void FileDescriptor::reset() noexcept {
  (void)close();
}

int FileDescriptor::close() noexcept {
  if (fd_ < 0) return 0;
  // Not retried on EINTR: Linux has released the descriptor either way.
  const int result = ::close(fd_);
  fd_ = -1;
  return result == 0 ? 0 : errno;
}

void throw_short_read(const std::string& name, std::uint64_t offset, std::size_t length,
                      std::size_t got) {
  throw Error(ErrorCode::io, name + ": unexpected end of file reading " + std::to_string(length) +
                                 " bytes at offset " + std::to_string(offset) + " (got " +
                                 std::to_string(got) + "); did the file shrink?");
}

ReadResult pread_full(int fd, std::span<std::byte> out, std::uint64_t offset) noexcept {
  ReadResult result;
  while (result.bytes < out.size()) {
    const std::size_t want = std::min(out.size() - result.bytes, max_transfer);
    const ssize_t n =
        ::pread(fd, out.data() + result.bytes, want, static_cast<off_t>(offset + result.bytes));
    if (n < 0) {
      if (errno == EINTR) continue;
      result.error = errno;
      break;
    }
    if (n == 0) break;
    result.bytes += static_cast<std::size_t>(n);
  }
  return result;
}

void pread_exact(int fd, const std::string& name, std::uint64_t offset, std::span<std::byte> out) {
  const ReadResult got = pread_full(fd, out, offset);
  if (got.error != 0) {
    throw_os_error(name, "cannot read at offset " + std::to_string(offset + got.bytes), got.error);
  }
  if (got.bytes != out.size()) throw_short_read(name, offset, out.size(), got.bytes);
}

int write_full(int fd, std::span<const std::byte> bytes) noexcept {
  while (!bytes.empty()) {
    const ssize_t done = ::write(fd, bytes.data(), std::min(bytes.size(), max_transfer));
    if (done < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    // A zero-byte write of a non-empty buffer would loop forever; no regular file does it
    // unless the device is full.
    if (done == 0) return ENOSPC;
    bytes = bytes.subspan(static_cast<std::size_t>(done));
  }
  return 0;
}

FileDescriptor open_regular_file(const std::string& path, int extra_flags) {
  // stat first, so that a device is never even opened (opening one can have side effects);
  // the fstat below closes the race with a rename in between.
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) not_regular(path, st.st_mode);
  // O_NONBLOCK: a FIFO swapped in after the stat must not block open(2) either.
  FileDescriptor fd = open_retrying(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | extra_flags);
  if (!fd.is_open()) throw_os_error(path, "cannot open", errno);
  if (::fstat(fd.get(), &st) != 0) throw_os_error(path, "cannot stat", errno);
  if (!S_ISREG(st.st_mode)) not_regular(path, st.st_mode);
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
    throw_os_error(path, "cannot clear O_NONBLOCK", errno);
  }
  return fd;
}

FileDescriptor reopen_direct(int fd) noexcept {
#ifdef O_DIRECT
  if (fd < 0) return {};
  const std::string self = "/proc/self/fd/" + std::to_string(fd);
  return open_retrying(self.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
#else
  (void)fd;
  return {};
#endif
}

std::uint64_t file_size(int fd, const std::string& name) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_os_error(name, "cannot stat", errno);
  return static_cast<std::uint64_t>(st.st_size);
}

std::string read_regular_file(const std::string& path, std::uint64_t limit) {
  const FileDescriptor fd = open_regular_file(path);
  std::string text;
  char buffer[1 << 16];
  while (text.size() <= limit) {
    const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_os_error(path, "cannot read", errno);
    if (n == 0) break;
    text.append(buffer, static_cast<std::size_t>(n));
  }
  if (text.size() > limit + 1) text.resize(limit + 1);
  return text;
}

void reserve_space(const std::filesystem::path& path, std::uint64_t bytes) noexcept {
#ifdef FALLOC_FL_KEEP_SIZE
  const FileDescriptor fd = open_retrying(path.c_str(), O_WRONLY | O_CLOEXEC);
  // FALLOC_FL_KEEP_SIZE: the size stays as it is; a file system without fallocate simply
  // allocates as it writes.
  if (fd.is_open()) (void)::fallocate(fd.get(), FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(bytes));
#else
  (void)path;
  (void)bytes;
#endif
}

}  // namespace safetensors::detail
