#include "io/posix.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include "safetensors/error.hpp"

namespace safetensors::detail {
namespace {

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

}  // namespace

void throw_os_error(std::string_view name, std::string_view what, int err) {
  // std::system_category().message is thread-safe, unlike strerror.
  std::string message(name);
  message += ": ";
  message += what;
  message += ": ";
  message += std::system_category().message(err);
  throw Error(ErrorCode::io, message);
}

int open_regular_file(const std::string& path, int extra_flags) {
  // stat first, so that a device is never even opened (opening one can have side effects);
  // the fstat below closes the race with a rename in between.
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) not_regular(path, st.st_mode);
  int fd;
  do {
    // O_NONBLOCK: a FIFO swapped in after the stat must not block open(2) either.
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | extra_flags);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) throw_os_error(path, "cannot open", errno);
  auto fail = [&](std::string_view what) {
    const int err = errno;
    ::close(fd);
    throw_os_error(path, what, err);
  };
  if (::fstat(fd, &st) != 0) fail("cannot stat");
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    not_regular(path, st.st_mode);
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) fail("cannot clear O_NONBLOCK");
  return fd;
}

std::string read_regular_file(const std::string& path, std::uint64_t limit) {
  const int fd = open_regular_file(path);
  std::string text;
  char buffer[1 << 16];
  while (text.size() <= limit) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      throw_os_error(path, "cannot read", err);
    }
    if (n == 0) break;
    text.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  if (text.size() > limit + 1) text.resize(limit + 1);
  return text;
}

}  // namespace safetensors::detail
