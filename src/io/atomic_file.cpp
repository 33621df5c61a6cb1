#include "safetensors/output.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <random>
#include <string>
#include <string_view>

#include "safetensors/error.hpp"

namespace safetensors {
namespace {

// Linux transfers at most 0x7ffff000 bytes per write(2); staying below keeps every call
// well-defined on any platform where ssize_t is 64 bits.
constexpr std::size_t max_write_chunk = std::size_t{1} << 30;

// Dirty data is handed to the disk in pieces of this size while writing goes on, so the
// fsync in commit() waits for the last piece rather than for the whole file.
constexpr std::uint64_t writeback_window = std::uint64_t{16} << 20;

std::string concat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view part : parts) out += part;
  return out;
}

[[noreturn]] void throw_io(const std::filesystem::path& target, std::string_view what, int err) {
  throw Error(ErrorCode::io, concat({target.native(), ": ", what, ": ", std::strerror(err)}));
}

std::string random_suffix() {
  static constexpr char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  thread_local std::mt19937_64 engine{std::random_device{}() ^
                                      (static_cast<std::uint64_t>(::getpid()) << 32)};
  std::uniform_int_distribution<std::size_t> pick(0, sizeof(digits) - 2);
  std::string suffix(12, '0');
  for (char& c : suffix) c = digits[pick(engine)];
  return suffix;
}

std::filesystem::path directory_of(const std::filesystem::path& target) {
  std::filesystem::path dir = target.parent_path();
  return dir.empty() ? std::filesystem::path(".") : dir;
}

}  // namespace

AtomicFile::AtomicFile(std::filesystem::path target) : target_(std::move(target)) {
  if (!target_.has_filename()) throw_io(target_, "not a file name", EISDIR);
  const std::filesystem::path dir = directory_of(target_);
  const std::string hidden_prefix = concat({".", target_.filename().native(), ".tmp-"});
  // O_EXCL makes a collision with another writer's temporary an error we retry, never a
  // shared file; the 0666 mode lets the umask decide permissions as for any new file.
  for (int attempt = 0; attempt < 100; ++attempt) {
    temp_ = dir / (hidden_prefix + random_suffix());
    fd_ = ::open(temp_.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666);
    if (fd_ >= 0) return;
    if (errno != EEXIST && errno != EINTR) {
      throw_io(target_, concat({"cannot create temporary file ", temp_.native()}), errno);
    }
  }
  throw_io(target_, concat({"cannot create a unique temporary file in ", dir.native()}), EEXIST);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !temp_.empty()) ::unlink(temp_.c_str());
}

void AtomicFile::write(std::span<const std::byte> bytes) {
  if (fd_ < 0) throw_io(target_, "write after commit", EBADF);
  while (!bytes.empty()) {
    const std::size_t want = std::min(bytes.size(), max_write_chunk);
    const ssize_t done = ::write(fd_, bytes.data(), want);
    if (done < 0) {
      if (errno == EINTR) continue;
      throw_io(target_, concat({"write to ", temp_.native(), " failed"}), errno);
    }
    // A zero-byte write of a non-empty buffer would loop forever; no regular file does it
    // unless the device is full.
    if (done == 0)
      throw_io(target_, concat({"write to ", temp_.native(), " made no progress"}), ENOSPC);
    bytes = bytes.subspan(static_cast<std::size_t>(done));
    written_ += static_cast<std::uint64_t>(done);
  }
  start_writeback();
}

void AtomicFile::start_writeback() noexcept {
#ifdef SYNC_FILE_RANGE_WRITE
  if (written_ - flushed_ < writeback_window) return;
  // Only a hint that starts the I/O; commit()'s fsync is what makes the data durable.
  (void)::sync_file_range(fd_, static_cast<off_t>(flushed_),
                          static_cast<off_t>(written_ - flushed_), SYNC_FILE_RANGE_WRITE);
  flushed_ = written_;
#endif
}

void AtomicFile::commit() {
  if (fd_ < 0) throw_io(target_, "commit called twice", EBADF);
  if (::fsync(fd_) != 0) throw_io(target_, concat({"fsync of ", temp_.native(), " failed"}), errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) throw_io(target_, concat({"close of ", temp_.native(), " failed"}), errno);
  if (::rename(temp_.c_str(), target_.c_str()) != 0) {
    throw_io(target_, concat({"rename from ", temp_.native(), " failed"}), errno);
  }
  committed_ = true;
  // Without flushing the directory the rename itself may be lost on a crash, leaving the
  // old file (or none) although commit returned.
  const std::filesystem::path dir = directory_of(target_);
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) throw_io(target_, concat({"cannot open directory ", dir.native()}), errno);
  const int synced = ::fsync(dir_fd);
  const int err = errno;
  ::close(dir_fd);
  if (synced != 0) throw_io(target_, concat({"fsync of directory ", dir.native(), " failed"}), err);
}

}  // namespace safetensors
