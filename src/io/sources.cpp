// The three Source implementations: a read-only mapping, pread(2) on a descriptor, and
// borrowed memory. Each is immutable after construction, which is what makes them safe to
// share between threads.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "io/posix.hpp"
#include "safetensors/error.hpp"
#include "safetensors/source.hpp"

namespace safetensors {
namespace {

using detail::throw_os_error;

void check_range(const std::string& name, std::uint64_t size, std::uint64_t offset,
                 std::uint64_t length) {
  if (offset > size || length > size - offset) {
    // The caller asked for bytes the source never had: its mistake, not the system's.
    throw Error(ErrorCode::invalid_argument, name + ": cannot read " + std::to_string(length) +
                                                 " bytes at offset " + std::to_string(offset) +
                                                 ": the source is only " + std::to_string(size) +
                                                 " bytes long");
  }
}

// Owns a descriptor so that every early exit of the constructors closes it.
class Descriptor {
 public:
  explicit Descriptor(const std::string& name) : fd_(detail::open_regular_file(name)) {}
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;
  ~Descriptor() { ::close(fd_); }

  int get() const noexcept { return fd_; }

  std::uint64_t size(const std::string& name) const {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) throw_os_error(name, "cannot stat", errno);
    return static_cast<std::uint64_t>(st.st_size);
  }

 private:
  int fd_ = -1;
};

// Any source whose bytes are already in memory: borrowed memory, or a mapping.
class SpanSource : public Source {
 public:
  SpanSource(std::span<const std::byte> bytes, std::string name)
      : bytes_(bytes), name_(std::move(name)) {}

  std::uint64_t size() const noexcept override { return bytes_.size(); }
  void read_at(std::uint64_t offset, std::span<std::byte> out) const override {
    check_range(name_, bytes_.size(), offset, out.size());
    if (!out.empty()) std::memcpy(out.data(), bytes_.data() + offset, out.size());
  }
  std::span<const std::byte> mapped() const noexcept override { return bytes_; }
  const std::string& name() const noexcept override { return name_; }

 private:
  std::span<const std::byte> bytes_;
  std::string name_;
};

std::span<const std::byte> map_file(const std::string& name, bool writable_private) {
  Descriptor fd(name);
  const std::uint64_t size = fd.size(name);
  // mmap refuses a zero length; an empty file simply maps to an empty span.
  if (size == 0) return {};
  const int protection = writable_private ? PROT_READ | PROT_WRITE : PROT_READ;
  // A writable private mapping is charged in full against the commit limit, so without
  // MAP_NORESERVE a file larger than RAM + swap could not be opened. Only pages actually
  // written take memory; under strict overcommit (mode 2) the kernel ignores the flag.
  const int flags = writable_private ? MAP_PRIVATE | MAP_NORESERVE : MAP_PRIVATE;
  void* base = ::mmap(nullptr, size, protection, flags, fd.get(), 0);
  if (base == MAP_FAILED) throw_os_error(name, "cannot map", errno);
  return {static_cast<const std::byte*>(base), size};
}

// The mapping outlives the descriptor: the kernel keeps the file referenced.
class MmapSource final : public SpanSource {
 public:
  MmapSource(const std::filesystem::path& path, bool writable_private)
      : SpanSource(map_file(path.string(), writable_private), path.string()),
        writable_(writable_private) {}
  MmapSource(const MmapSource&) = delete;
  MmapSource& operator=(const MmapSource&) = delete;
  ~MmapSource() override {
    const std::span<const std::byte> bytes = mapped();
    if (!bytes.empty()) ::munmap(const_cast<std::byte*>(bytes.data()), bytes.size());
  }

  void release(std::uint64_t offset, std::uint64_t size) const noexcept override {
    // In a writable private mapping MADV_DONTNEED would throw away the caller's changes.
    const std::span<const std::byte> bytes = mapped();
    if (writable_ || offset > bytes.size() || size > bytes.size() - offset) return;
    static const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
    // Only whole pages inside the range: a neighbour's bytes may share the edge pages.
    const auto begin = reinterpret_cast<std::uintptr_t>(bytes.data() + offset);
    const std::uintptr_t first = (begin + page - 1) / page * page;
    const std::uintptr_t last = (begin + size) / page * page;
    if (last > first) (void)::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  }

 private:
  bool writable_ = false;
};

class PreadSource final : public Source {
 public:
  explicit PreadSource(const std::filesystem::path& path)
      : name_(path.string()), fd_(name_), size_(fd_.size(name_)) {}

  std::uint64_t size() const noexcept override { return size_; }
  void read_at(std::uint64_t offset, std::span<std::byte> out) const override {
    check_range(name_, size_, offset, out.size());
    std::size_t done = 0;
    while (done < out.size()) {
      const ssize_t n = ::pread(fd_.get(), out.data() + done, out.size() - done,
                                static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        throw_os_error(name_, "cannot read at offset " + std::to_string(offset + done), errno);
      }
      if (n == 0) {
        // The file shrank after it was opened.
        throw Error(ErrorCode::io, name_ + ": unexpected end of file at offset " +
                                       std::to_string(offset + done) + " (expected " +
                                       std::to_string(size_) + " bytes)");
      }
      done += static_cast<std::size_t>(n);
    }
  }
  const std::string& name() const noexcept override { return name_; }

 private:
  std::string name_;
  Descriptor fd_;
  std::uint64_t size_;
};

}  // namespace

std::unique_ptr<Source> open_mmap_source(const std::filesystem::path& path) {
  return std::make_unique<MmapSource>(path, false);
}

std::unique_ptr<Source> open_writable_mmap_source(const std::filesystem::path& path) {
  return std::make_unique<MmapSource>(path, true);
}

std::unique_ptr<Source> open_pread_source(const std::filesystem::path& path) {
  return std::make_unique<PreadSource>(path);
}

std::unique_ptr<Source> make_memory_source(std::span<const std::byte> bytes, std::string name) {
  return std::make_unique<SpanSource>(bytes, std::move(name));
}

}  // namespace safetensors
