// The three Source implementations: a read-only mapping, pread(2) on a descriptor, and
// borrowed memory. Each is immutable after construction, which is what makes them safe to
// share between threads.
#include <cstring>
#include <string>

#include "io/memory.hpp"
#include "io/posix.hpp"
#include "safetensors/error.hpp"
#include "safetensors/source.hpp"

namespace safetensors {
namespace {

using detail::FileDescriptor;

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

// Any source whose bytes are already in memory: borrowed memory, or a mapping.
class SpanSource : public Source {
 public:
  SpanSource(std::span<const std::byte> bytes, std::string name)
      : bytes_(bytes), name_(std::move(name)) {}

  std::uint64_t size() const noexcept override { return bytes_.size(); }
  void read_at(std::uint64_t offset, std::span<std::byte> out) const override {
    check_range(name_, bytes_.size(), offset, out.size());
    if (!out.empty()) std::memcpy(out.data(), bytes_.data() + offset, out.size());
    count_read(out.size());
  }
  std::span<const std::byte> mapped() const noexcept override { return bytes_; }
  const std::string& name() const noexcept override { return name_; }

 protected:
  void set_bytes(std::span<const std::byte> bytes) noexcept { bytes_ = bytes; }

 private:
  std::span<const std::byte> bytes_;
  std::string name_;
};

// Keeps its descriptor open beside the mapping, for bulk readers (see Source::descriptor).
class MmapSource final : public SpanSource {
 public:
  MmapSource(const std::filesystem::path& path, bool writable_private)
      : SpanSource({}, path.string()),
        fd_(detail::open_regular_file(name())),
        mapping_(detail::map_file(
            fd_.get(), detail::file_size(fd_.get(), name()),
            writable_private ? detail::MapKind::copy_on_write : detail::MapKind::read_only,
            name())),
        writable_(writable_private) {
    set_bytes(mapping_.bytes());
  }

  int descriptor() const noexcept override { return fd_.get(); }

  void release(std::uint64_t offset, std::uint64_t size) const noexcept override {
    // In a writable private mapping MADV_DONTNEED would throw away the caller's changes.
    const std::span<const std::byte> bytes = mapped();
    if (writable_ || offset > bytes.size() || size > bytes.size() - offset) return;
    detail::advise(bytes.subspan(static_cast<std::size_t>(offset), static_cast<std::size_t>(size)),
                   detail::PageAdvice::dont_need);
  }

 private:
  FileDescriptor fd_;
  detail::Mapping mapping_;
  bool writable_ = false;
};

class PreadSource final : public Source {
 public:
  explicit PreadSource(const std::filesystem::path& path)
      : name_(path.string()),
        fd_(detail::open_regular_file(name_)),
        size_(detail::file_size(fd_.get(), name_)) {}

  std::uint64_t size() const noexcept override { return size_; }
  void read_at(std::uint64_t offset, std::span<std::byte> out) const override {
    check_range(name_, size_, offset, out.size());
    detail::pread_exact(fd_.get(), name_, offset, out);
    count_read(out.size());
  }
  const std::string& name() const noexcept override { return name_; }
  int descriptor() const noexcept override { return fd_.get(); }

 private:
  std::string name_;
  FileDescriptor fd_;
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
