#include "safetensors/atomic_file.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <initializer_list>
#include <random>
#include <string>
#include <string_view>

#include "io/posix.hpp"
#include "safetensors/error.hpp"

namespace safetensors {
namespace {

// Dirty data is handed to the disk in pieces of this size while writing goes on, so the
// fsync in commit() waits for the last piece rather than for the whole file.
constexpr std::uint64_t writeback_window = std::uint64_t{16} << 20;

std::string concat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view part : parts) out += part;
  return out;
}

[[noreturn]] void throw_io(const std::filesystem::path& target, std::string_view what, int err) {
  detail::throw_os_error(target.native(), what, err);
}

constexpr std::size_t suffix_length = 12;
constexpr std::string_view suffix_digits = "0123456789abcdefghijklmnopqrstuvwxyz";

std::string random_suffix() {
  thread_local std::mt19937_64 engine{std::random_device{}() ^
                                      (static_cast<std::uint64_t>(::getpid()) << 32)};
  std::uniform_int_distribution<std::size_t> pick(0, suffix_digits.size() - 1);
  std::string suffix(suffix_length, '0');
  for (char& c : suffix) c = suffix_digits[pick(engine)];
  return suffix;
}

std::filesystem::path directory_of(const std::filesystem::path& target) {
  std::filesystem::path dir = target.parent_path();
  return dir.empty() ? std::filesystem::path(".") : dir;
}

// Exactly what AtomicFile names its temporaries: the prefix and a random suffix.
bool is_our_temp(std::string_view name, std::string_view prefix) {
  if (name.size() != prefix.size() + suffix_length || !name.starts_with(prefix)) return false;
  return name.substr(prefix.size()).find_first_not_of(suffix_digits) == std::string_view::npos;
}

int lock_retrying(int fd, int operation) {
  int result;
  do {
    result = ::flock(fd, operation);
  } while (result != 0 && errno == EINTR);
  return result;
}

// Deletes the temporary `name` in `dir_fd` if its writer is gone. Every live writer holds
// an exclusive flock on its temporary until the rename, and the kernel drops the lock when
// the writer dies however it dies; a temporary we can lock is therefore abandoned. Best
// effort: anything unexpected leaves the file alone.
void remove_if_abandoned(int dir_fd, const char* name) {
  const detail::FileDescriptor fd(
      ::openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd.is_open()) return;
  struct stat held {};
  struct stat now {};
  // Still the same file under that name once locked: it was not renamed into place, or
  // removed and replaced, in the meantime.
  if (::fstat(fd.get(), &held) == 0 && S_ISREG(held.st_mode) &&
      lock_retrying(fd.get(), LOCK_EX | LOCK_NB) == 0 &&
      ::fstatat(dir_fd, name, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_dev == held.st_dev &&
      now.st_ino == held.st_ino) {
    (void)::unlinkat(dir_fd, name, 0);
  }
}

// A writer killed before its rename (SIGKILL, power loss) leaves its temporary behind;
// the next save to the same target removes those no live writer owns.
void remove_abandoned_temps(const std::filesystem::path& dir, std::string_view prefix) {
  DIR* listing = ::opendir(dir.c_str());
  if (listing == nullptr) return;
  const int dir_fd = ::dirfd(listing);
  while (const dirent* entry = ::readdir(listing)) {
    if (is_our_temp(entry->d_name, prefix)) remove_if_abandoned(dir_fd, entry->d_name);
  }
  ::closedir(listing);
}

}  // namespace

AtomicFile::AtomicFile(std::filesystem::path target) : target_(std::move(target)) {
  if (!target_.has_filename()) throw_io(target_, "not a file name", EISDIR);
  const std::filesystem::path dir = directory_of(target_);
  const std::string hidden_prefix = concat({".", target_.filename().native(), ".tmp-"});
  remove_abandoned_temps(dir, hidden_prefix);
  // O_EXCL makes a collision with another writer's temporary an error we retry, never a
  // shared file; the 0666 mode lets the umask decide permissions as for any new file.
  for (int attempt = 0; attempt < 100; ++attempt) {
    temp_ = dir / (hidden_prefix + random_suffix());
    fd_ = ::open(temp_.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666);
    if (fd_ < 0) {
      if (errno != EEXIST && errno != EINTR) {
        throw_io(target_, concat({"cannot create temporary file ", temp_.native()}), errno);
      }
      continue;
    }
    // The lock tells other writers' cleanup that this temporary is alive. One of them may
    // have locked and removed it in the instant before we did: then we start over.
    struct stat st {};
    if (lock_retrying(fd_, LOCK_EX) != 0 || ::fstat(fd_, &st) != 0) {
      const int err = errno;
      ::close(fd_);
      ::unlink(temp_.c_str());
      fd_ = -1;
      throw_io(target_, concat({"cannot lock temporary file ", temp_.native()}), err);
    }
    if (st.st_nlink > 0) return;
    ::close(fd_);
    fd_ = -1;
  }
  throw_io(target_, concat({"cannot create a unique temporary file in ", dir.native()}), EEXIST);
}

AtomicFile::~AtomicFile() {
  // Unlinked before the close drops the lock, so no cleanup ever sees it unlocked.
  if (!committed_ && !temp_.empty()) ::unlink(temp_.c_str());
  if (fd_ >= 0) ::close(fd_);
}

void AtomicFile::write(std::span<const std::byte> bytes) {
  if (fd_ < 0) throw_io(target_, "write after commit", EBADF);
  if (const int err = detail::write_full(fd_, bytes); err != 0) {
    throw_io(target_, concat({"write to ", temp_.native(), " failed"}), err);
  }
  written_ += bytes.size();
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
  // Renamed while the descriptor, and so the lock, is still held: another writer's cleanup
  // must not take the finished temporary for an abandoned one.
  if (::rename(temp_.c_str(), target_.c_str()) != 0) {
    throw_io(target_, concat({"rename from ", temp_.native(), " failed"}), errno);
  }
  committed_ = true;
  detail::FileDescriptor written(fd_);
  fd_ = -1;
  // After a successful fsync a failing close loses nothing; report it all the same.
  if (const int err = written.close(); err != 0) {
    throw_io(target_, concat({"close of ", target_.native(), " failed"}), err);
  }
  // Without flushing the directory the rename itself may be lost on a crash, leaving the
  // old file (or none) although commit returned.
  const std::filesystem::path dir = directory_of(target_);
  const detail::FileDescriptor dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd.is_open()) throw_io(target_, concat({"cannot open directory ", dir.native()}), errno);
  if (::fsync(dir_fd.get()) != 0) {
    throw_io(target_, concat({"fsync of directory ", dir.native(), " failed"}), errno);
  }
}

}  // namespace safetensors
