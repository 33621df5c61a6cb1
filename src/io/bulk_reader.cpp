#include "io/bulk_reader.hpp"

#include <cerrno>
#include <string>

#include "safetensors/error.hpp"

namespace safetensors::detail {

BulkReader::BulkReader(const Source& source, bool direct, bool map) : source_(&source) {
  const int fd = source.descriptor();
  if (direct) direct_fd_ = reopen_direct(fd);
  if (!map) return;
  // A mapping of our own, so that the access advice cannot change how the caller's zero-copy
  // views behave; the Source's mapping is the fallback.
  if (fd >= 0) {
    try {
      own_mapping_ = map_file(fd, source.size(), MapKind::shared_read, name());
      // Larger read-ahead on faults; it also drops the pages from this mapping behind us.
      advise(own_mapping_.bytes(), PageAdvice::sequential);
    } catch (const Error&) {
      // The Source's own mapping, if any, serves as well.
    }
  }
  const std::span<const std::byte> mapped =
      own_mapping_.bytes().empty() ? source.mapped() : own_mapping_.bytes();
  if (!mapped.empty()) mapping_ = mapped.data();
}

void BulkReader::prefetch(std::uint64_t offset, std::uint64_t length) const noexcept {
  if (!mapping_ || length == 0) return;
  advise({mapping_ + offset, static_cast<std::size_t>(length)}, PageAdvice::will_need);
}

void BulkReader::read(std::uint64_t offset, std::span<std::byte> out) const {
  // Through the descriptor even for a mapped source: pread copies without the page-table
  // work a copy out of a mapping pays for (see make_job in src/loader/loader.cpp).
  const int fd = source_->descriptor();
  if (fd < 0) return source_->read_at(offset, out);
  pread_exact(fd, name(), offset, out);
  source_->count_read(out.size());
}

std::span<const std::byte> BulkReader::read_direct(std::uint64_t offset, std::size_t length,
                                                   std::span<std::byte> bounce) const {
  if (direct_fd_.is_open() && !direct_refused_.load(std::memory_order_relaxed)) {
    const std::uint64_t begin = offset / direct_alignment * direct_alignment;
    const std::uint64_t end =
        (offset + length + direct_alignment - 1) / direct_alignment * direct_alignment;
    const std::size_t skip = static_cast<std::size_t>(offset - begin);
    const ReadResult got = pread_full(direct_fd_.get(), bounce.first(end - begin), begin);
    if (got.error == 0) {
      source_->count_read(got.bytes);
      // The last block of the file comes back short; only the requested bytes must be there.
      if (got.bytes < skip + length) {
        throw_short_read(name(), offset, length, got.bytes > skip ? got.bytes - skip : 0);
      }
      return bounce.subspan(skip, length);
    }
    if (got.error != EINVAL) {
      throw_os_error(name(), "cannot read (O_DIRECT) at offset " + std::to_string(begin),
                     got.error);
    }
    // Some file systems accept O_DIRECT at open and refuse the reads.
    direct_refused_.store(true, std::memory_order_relaxed);
  }
  read(offset, bounce.first(length));
  return bounce.first(length);
}

}  // namespace safetensors::detail
