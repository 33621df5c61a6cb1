#include "io/memory.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "io/posix.hpp"

namespace safetensors::detail {
namespace {

constexpr std::size_t huge_page = std::size_t{2} << 20;

std::uintptr_t page_size() noexcept {
  static const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  return page;
}

}  // namespace

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    Mapping old(bytes_);
    bytes_ = other.bytes_;
    other.bytes_ = {};
  }
  return *this;
}

Mapping::~Mapping() {
  if (!bytes_.empty()) ::munmap(const_cast<std::byte*>(bytes_.data()), bytes_.size());
}

Mapping map_file(int fd, std::uint64_t size, MapKind kind, const std::string& name) {
  if (size == 0) return {};
  int protection = PROT_READ;
  int flags = MAP_PRIVATE;
  if (kind == MapKind::copy_on_write) {
    // A writable private mapping is charged in full against the commit limit, so without
    // MAP_NORESERVE a file larger than RAM + swap could not be opened. Only pages actually
    // written take memory; under strict overcommit (mode 2) the kernel ignores the flag.
    protection |= PROT_WRITE;
    flags |= MAP_NORESERVE;
  } else if (kind == MapKind::shared_read) {
    flags = MAP_SHARED;
  }
  void* base = ::mmap(nullptr, size, protection, flags, fd, 0);
  if (base == MAP_FAILED) throw_os_error(name, "cannot map", errno);
  return Mapping({static_cast<const std::byte*>(base), static_cast<std::size_t>(size)});
}

void advise(std::span<const std::byte> range, PageAdvice advice) noexcept {
  if (range.empty()) return;
  const std::uintptr_t page = page_size();
  const auto begin = reinterpret_cast<std::uintptr_t>(range.data());
  const std::uintptr_t end = begin + range.size();
  const bool inner = advice == PageAdvice::dont_need || advice == PageAdvice::huge_pages;
  const std::uintptr_t first = inner ? (begin + page - 1) / page * page : begin / page * page;
  const std::uintptr_t last = inner ? end / page * page : end;
  if (last <= first) return;
  int system_advice = MADV_SEQUENTIAL;
  switch (advice) {
    case PageAdvice::sequential:
      system_advice = MADV_SEQUENTIAL;
      break;
    case PageAdvice::will_need:
      system_advice = MADV_WILLNEED;
      break;
    case PageAdvice::dont_need:
      system_advice = MADV_DONTNEED;
      break;
    case PageAdvice::huge_pages:
#ifdef MADV_HUGEPAGE
      system_advice = MADV_HUGEPAGE;
      break;
#else
      return;
#endif
  }
  (void)::madvise(reinterpret_cast<void*>(first), last - first, system_advice);
}

std::shared_ptr<std::byte[]> allocate_huge_page_aligned(std::uint64_t size) {
  if (size < huge_page || size > SIZE_MAX - 2 * huge_page) return nullptr;
  // Mapped a huge page larger than needed; the slack before the boundary and after the
  // rounded-up buffer is unmapped at once.
  const std::size_t page = page_size();
  const std::size_t length = (static_cast<std::size_t>(size) + page - 1) / page * page;
  void* raw = ::mmap(nullptr, length + huge_page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  auto* base = static_cast<std::byte*>(raw);
  const std::size_t head =
      (huge_page - reinterpret_cast<std::uintptr_t>(base) % huge_page) % huge_page;
  if (head != 0) ::munmap(base, head);
  if (huge_page - head != 0) ::munmap(base + head + length, huge_page - head);
  advise({base + head, length}, PageAdvice::huge_pages);
  return {base + head, [length](std::byte* p) { ::munmap(p, length); }};
}

}  // namespace safetensors::detail
