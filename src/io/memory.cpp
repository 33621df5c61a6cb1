#include "io/memory.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "io/posix.hpp"

namespace safetensors::detail {
namespace {

// populate(): the unit of work, and the default number of workers. `safetensors bench`, rows
// "mapped" (498 MB file, 2-core VM, virtio disk, two runs): cold, 1 / 2 / 4 workers read
// 2.8-3.3 / 2.1-2.4 / 2.4-2.9 GB/s, as the kernel already reads ahead 8 MB per request for
// one. Warm, where cached chunks are mapped by fault-around reads (map_in), the same rows on a
// 498 MB file whose page cache held 374 of 486 MB in 2 MiB folios: 275 / 445 GB/s for 1 / 2
// workers, 15 / 24x a warm read(2) of the file in the same run. Four keep warm loads fast and
// cost little cold.
constexpr std::size_t populate_chunk = std::size_t{32} << 20;
constexpr unsigned populate_default_threads = 4;

// The mapping is not marked MADV_HUGEPAGE. Marked, every fault of a cold file mapping reads
// one 2 MiB folio (and 2 MiB ahead) instead of the readahead window, 8 MB here, which is slow
// on a VM that has handed its free memory back to the host (each new page then costs a host
// fault, and small requests overlap less of them). On the development VM, cache dropped 3 s
// before each run, both builds, the reference and `cat` alternating in one run: a 1.7 GB F16
// file loaded with `load_file(materialize=True)` took 0.66x the reference's time marked and
// 0.42x unmarked; the 498 MB GPT-2 file 1.63x and 0.81x (README, "Where the time of a cold
// load goes"). Unmarked, less of the page cache is in 2 MiB folios, so later warm loads cost
// about twice as much, for the reference as for us (the ratio 0.77x before, 0.75x after).
// The first load is the one users wait for.

// The kernel maps this much around a faulting address when the pages are cached (Linux's
// fault_around_bytes default; a smaller setting leaves cached pages to minor faults later).
constexpr std::uintptr_t fault_around_window = std::uintptr_t{64} << 10;

// prefault_for_write(): small enough that a stop is seen soon, large enough to cost few calls.
constexpr std::uintptr_t prefault_step = std::uintptr_t{8} << 20;

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

namespace {

// Faults in the pages of [begin, end), both page aligned; false when the kernel does not know
// MADV_POPULATE_READ (before 5.14). Throws for pages that cannot be read.
bool populate_range(std::uintptr_t begin, std::uintptr_t end, const std::string& name) {
#ifdef MADV_POPULATE_READ
  if (::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_READ) == 0) return true;
  if (errno == EINVAL) return false;
  // EFAULT: a page past the end of the file, which has shrunk since it was mapped.
  if (errno == EFAULT) throw_os_error(name, "cannot read into memory (did the file shrink?)", EIO);
  throw_os_error(name, "cannot read into memory", errno);
#else
  (void)begin;
  (void)end;
  (void)name;
  return false;
#endif
}

// Reads a byte of `begin`'s page and of every `stride`-aligned address after it up to `end`:
// one in every window of that size the range touches.
void touch_pages(std::uintptr_t begin, std::uintptr_t end, std::uintptr_t stride) noexcept {
  (void)*reinterpret_cast<const volatile std::byte*>(begin);
  for (std::uintptr_t at = begin / stride * stride + stride; at < end; at += stride) {
    (void)*reinterpret_cast<const volatile std::byte*>(at);
  }
}

// Whether the page at `at` of a file mapping is in the page cache; false when unknown.
bool resident(std::uintptr_t at) noexcept {
  unsigned char state = 0;
  return ::mincore(reinterpret_cast<void*>(at), page_size(), &state) == 0 && (state & 1u) != 0;
}

// Maps [begin, end) of a file mapping into this process.
//
// A chunk whose first and last pages are cached (a warm load) is mapped by reading one byte
// per fault-around window: each fault maps the cached pages around it, and a 2 MiB folio
// whole. For a warm 498 MB file whose page cache held 4 KiB to 2 MiB folios that took 1.5 ms,
// against 4.2 ms for MADV_POPULATE_READ, which after each fault walks every page of the window
// again (C probe, 2-core VM). Both ends are asked because the kernel's readahead for the chunk
// before often brings in the first pages of a cold one. The last page is populated first:
// past the end of a file that shrank, that is an error, where the read would be SIGBUS
// (mincore may still call such a page cached when a large folio straddled the new end).
//
// Other chunks go through MADV_POPULATE_READ, which reads ahead, and then every page is read
// once. On a virtual machine, the first access of the guest's CPU to memory that a device just
// filled costs a fault in the hypervisor, per 4 KiB page: a cold 498 MB file populated without
// this took 20-430 ms more on its first touch, after the I/O (0.2-0.3 s), on the 2-core VM.
// Reading the pages here moves that cost onto the workers, overlapped with the reads of other
// chunks, so that a populated file is fast to use, as `cat` leaves it.
void map_in(std::uintptr_t begin, std::uintptr_t end, const std::string& name,
            std::atomic<bool>& unsupported) {
  if (!unsupported.load(std::memory_order_relaxed)) {
    const std::uintptr_t last = (end - 1) / page_size() * page_size();
    if (resident(begin) && resident(last) && populate_range(last, last + page_size(), name)) {
      touch_pages(begin, end, std::max(fault_around_window, page_size()));
      return;
    }
    if (populate_range(begin, end, name)) {
      touch_pages(begin, end, page_size());
      return;
    }
    unsupported.store(true, std::memory_order_relaxed);
  }
  touch_pages(begin, end, page_size());
}

}  // namespace

void populate(std::span<const std::byte> mapped, unsigned threads, const std::string& name) {
  const std::span<const std::byte> ranges[] = {mapped};
  populate(ranges, threads, name);
}

void populate(std::span<const std::span<const std::byte>> ranges, unsigned threads,
              const std::string& name,
              const std::function<void(std::uint64_t, std::uint64_t)>& progress) {
  // Every range cut into chunks of at most populate_chunk, so that one pool of workers
  // shares them all.
  struct Chunk {
    std::uintptr_t from;
    std::uintptr_t to;
  };
  std::vector<Chunk> chunks;
  const std::uintptr_t page = page_size();
  for (const std::span<const std::byte> range : ranges) {
    if (range.empty()) continue;
    const auto begin = reinterpret_cast<std::uintptr_t>(range.data()) / page * page;
    const std::uintptr_t end = reinterpret_cast<std::uintptr_t>(range.data()) + range.size();
    for (std::uintptr_t from = begin; from < end; from += populate_chunk) {
      chunks.push_back({from, std::min(end, from + populate_chunk)});
    }
  }
  std::uint64_t total = 0;
  for (const Chunk& chunk : chunks) total += chunk.to - chunk.from;
  const unsigned workers = static_cast<unsigned>(
      std::min<std::size_t>(chunks.size(), threads != 0 ? threads : populate_default_threads));

  std::atomic<std::size_t> next{0};
  std::atomic<bool> unsupported{false};
  std::atomic<bool> failed{false};
  std::atomic<std::uint64_t> done{0};
  std::mutex error_mutex;
  std::exception_ptr error;
  // `caller`: the calling thread, the only one that reports progress (a Python caller's
  // signal check runs only on the thread that called it, its main thread).
  std::uint64_t reported = 0;
  const auto work = [&](bool caller) {
    try {
      for (std::size_t i; !failed.load(std::memory_order_relaxed) &&
                          (i = next.fetch_add(1, std::memory_order_relaxed)) < chunks.size();) {
        const Chunk chunk = chunks[i];
        map_in(chunk.from, chunk.to, name, unsupported);
        const std::uint64_t now = done.fetch_add(chunk.to - chunk.from, std::memory_order_relaxed) +
                                  chunk.to - chunk.from;
        if (caller && progress) {
          reported = now;
          progress(now, total);
        }
      }
    } catch (...) {
      std::lock_guard lock(error_mutex);
      if (!error) error = std::current_exception();
      failed.store(true, std::memory_order_relaxed);
    }
  };
  {
    std::vector<std::jthread> helpers;
    for (unsigned i = 1; i < workers; ++i) helpers.emplace_back(work, false);
    work(true);
  }
  if (error) std::rethrow_exception(error);
  // The helpers may have taken every chunk (warm pages go fast): the caller still reports the
  // end once.
  if (progress && reported < total) progress(total, total);
}

bool prefault_for_write(std::span<std::byte> range, const std::atomic<bool>& stop) noexcept {
#ifdef MADV_POPULATE_WRITE
  const std::uintptr_t page = page_size();
  const std::uintptr_t begin = reinterpret_cast<std::uintptr_t>(range.data()) / page * page;
  const std::uintptr_t end = reinterpret_cast<std::uintptr_t>(range.data()) + range.size();
  for (std::uintptr_t at = begin; at < end && !stop.load(std::memory_order_relaxed);
       at += prefault_step) {
    const std::uintptr_t length = std::min<std::uintptr_t>(prefault_step, end - at);
    if (::madvise(reinterpret_cast<void*>(at), length, MADV_POPULATE_WRITE) != 0) return false;
  }
  return true;
#else
  (void)range;
  (void)stop;
  return false;
#endif
}

void advise(std::span<const std::byte> range, PageAdvice advice) noexcept {
  if (range.empty()) return;
  const std::uintptr_t page = page_size();
  const auto begin = reinterpret_cast<std::uintptr_t>(range.data());
  const std::uintptr_t end = begin + range.size();
  const bool inner = advice == PageAdvice::dont_need;
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
  }
  (void)::madvise(reinterpret_cast<void*>(first), last - first, system_advice);
}

}  // namespace safetensors::detail
