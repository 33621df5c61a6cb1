// Memory the operating system hands out: mappings of files, large anonymous buffers, and
// advice about pages. Only src/io/ and the bindings' buffer hints use this; format code sees
// `Source::mapped()`.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>

namespace safetensors::detail {

enum class MapKind {
  read_only,      // PROT_READ, MAP_PRIVATE: what a Source hands out for zero-copy views
  copy_on_write,  // PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE: writes stay private
  shared_read,    // PROT_READ, MAP_SHARED: a reader's own mapping, whose advice is its own
};

/// Owns one mapping of a file: unmapped when this goes, handed on by moving.
class Mapping {
 public:
  Mapping() noexcept = default;
  Mapping(Mapping&& other) noexcept : bytes_(other.bytes_) { other.bytes_ = {}; }
  Mapping& operator=(Mapping&& other) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping();

  std::span<const std::byte> bytes() const noexcept { return bytes_; }

 private:
  friend Mapping map_file(int fd, std::uint64_t size, MapKind kind, const std::string& name);
  explicit Mapping(std::span<const std::byte> bytes) noexcept : bytes_(bytes) {}
  std::span<const std::byte> bytes_;
};

/// Reads every page of `mapped`, a mapping of a file, into memory now: after this, touching
/// any byte costs no I/O (and no page fault where the kernel's fault-around maps whole
/// windows, its default). `threads` workers (0: a measured default) take 32 MiB at a time:
/// one already cached is mapped by reading a byte per fault-around window, one that is not
/// is asked of the kernel (MADV_POPULATE_READ), which reads ahead sequentially at the speed
/// of `cat`, and then read a byte per page, so that the first access of the CPU to the new
/// pages (a hypervisor fault on a virtual machine) is paid here, as `cat` pays it; kernels
/// before 5.14 get one read of a byte per page instead. The range is not marked for huge
/// pages: that would make the kernel read a cold file 2 MiB per request instead of its
/// readahead window (see memory.cpp). Throws io naming `name` when a page cannot be read (an
/// I/O error, or the file shrank).
void populate(std::span<const std::byte> mapped, unsigned threads, const std::string& name);

/// populate() for several ranges of mappings at once, one pool of workers sharing them.
/// `progress`, when set, is called as (bytes read, bytes in all) on the calling thread (itself
/// one of the workers) after each chunk it has read, so that a caller can report on or stop a
/// long read (Ctrl-C in Python): an exception it throws makes every worker stop after its
/// current chunk, and populate rethrows it once all have.
void populate(std::span<const std::span<const std::byte>> ranges, unsigned threads,
              const std::string& name,
              const std::function<void(std::uint64_t, std::uint64_t)>& progress = {});

/// Faults in the pages of `range`, memory about to be filled, ready for writing
/// (MADV_POPULATE_WRITE), without changing a byte: a copy into them then costs no fault, so
/// another thread can do this ahead of the copies. Works in steps of a few huge pages and
/// returns when `stop` becomes true. False when the kernel cannot (before 5.14) or memory ran
/// short; the copies then fault the pages in themselves.
bool prefault_for_write(std::span<std::byte> range, const std::atomic<bool>& stop) noexcept;

/// Maps the first `size` bytes of `fd`; an empty file maps to an empty span (mmap refuses a
/// zero length). Throws io naming `name` when the system refuses.
Mapping map_file(int fd, std::uint64_t size, MapKind kind, const std::string& name);

enum class PageAdvice {
  sequential,  // read ahead in larger steps on faults, and drop pages behind
  will_need,   // start reading into the page cache now
  dont_need,   // drop from this process (the page cache keeps file pages)
};

/// Gives `advice` for the pages of `range`; only a hint, so failures are ignored. Advice that
/// takes pages away (dont_need) covers only the whole pages inside the range, as a
/// neighbour's bytes may share the pages at its edges; the others start at the page holding
/// the first byte.
void advise(std::span<const std::byte> range, PageAdvice advice) noexcept;

}  // namespace safetensors::detail
