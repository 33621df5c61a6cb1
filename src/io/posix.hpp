// The library's calls to the operating system on files: descriptors, whole reads and writes
// that survive signals, opening an input so that nothing but a regular file gets through, and
// the one way from errno to an Error. Only src/io/ includes this; the layers above see
// `Source`, `AtomicFile` and the helpers here, never a system call
// (tests/structure/check_os_calls.sh enforces it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace safetensors::detail {

/// Throws `Error(io, "<name>: <what>: <system message for err>")` carrying `err` as its
/// `os_error()`, so that callers can still tell ENOENT from EACCES.
[[noreturn]] void throw_os_error(std::string_view name, std::string_view what, int err);

/// The calling thread's errno, for libraries loaded at run time that report a failed system
/// call through it (cuFileRead's -1, device/gds.cpp) and then go to throw_os_error.
int last_os_error() noexcept;

/// Owns one open descriptor: closed when this goes, handed on by moving, never copied.
class FileDescriptor {
 public:
  FileDescriptor() noexcept = default;
  explicit FileDescriptor(int fd) noexcept : fd_(fd) {}
  FileDescriptor(FileDescriptor&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  FileDescriptor& operator=(FileDescriptor&& other) noexcept;
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() { reset(); }

  int get() const noexcept { return fd_; }
  bool is_open() const noexcept { return fd_ >= 0; }

  /// Closes now, ignoring what close(2) says: for descriptors only read from.
  void reset() noexcept;
  /// Closes now and returns close(2)'s errno (0 when it succeeded): after writing, a failing
  /// close can mean lost data.
  int close() noexcept;

 private:
  int fd_ = -1;
};

/// What a whole read got: `bytes` read before it stopped, and `error`, the errno of the read
/// that failed (0 when none did). Fewer bytes and no error means the file ended.
struct ReadResult {
  std::size_t bytes = 0;
  int error = 0;
};

/// pread(2) until `out` is full, the file ends or a read fails, retrying when a signal
/// interrupts it.
ReadResult pread_full(int fd, std::span<std::byte> out, std::uint64_t offset) noexcept;

/// Throws io: `name` ended after `got` of the `length` bytes wanted at `offset`.
[[noreturn]] void throw_short_read(const std::string& name, std::uint64_t offset,
                                   std::size_t length, std::size_t got);

/// pread_full that must fill `out`: throws io naming `name` and the offset when a read fails
/// or the file ends first (it shrank after it was opened).
void pread_exact(int fd, const std::string& name, std::uint64_t offset, std::span<std::byte> out);

/// write(2) all of `bytes`, in pieces every platform accepts, retrying when a signal
/// interrupts it. Returns 0, or the errno of the write that failed (ENOSPC when one made no
/// progress).
int write_full(int fd, std::span<const std::byte> bytes) noexcept;

/// Opens `path` read-only (plus `extra_flags`). Anything but a regular file is refused with
/// `not_regular_file` before it can block: open(2) of a FIFO without a writer never returns,
/// and a read from a terminal or socket waits for input. Block devices are refused too
/// (their st_size is 0 and nobody stores a safetensors file on a raw device). Other failures
/// throw io, naming the file.
FileDescriptor open_regular_file(const std::string& path, int extra_flags = 0);

/// Opens the file behind `fd` once more, as a new open file description with O_DIRECT, through
/// /proc/self/fd: the same file even if its name now points elsewhere. Not open when the system
/// or the file system refuses; callers then read through `fd`.
FileDescriptor reopen_direct(int fd) noexcept;

/// The size of the file behind `fd`; throws io naming `name`.
std::uint64_t file_size(int fd, const std::string& name);

/// Reads a regular file whole, but at most `limit + 1` bytes, so a caller can refuse a file
/// over its limit without holding more of it. Throws like `open_regular_file`.
std::string read_regular_file(const std::string& path, std::uint64_t limit);

/// Reserves `bytes` of disk for `path` without changing its size; best effort. On ext4,
/// writing into reserved (unwritten) extents is several times faster than allocating while
/// writing (measured: 500 MB in 0.1 s instead of 0.35-0.5 s).
void reserve_space(const std::filesystem::path& path, std::uint64_t bytes) noexcept;

}  // namespace safetensors::detail
