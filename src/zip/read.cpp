// Reading entries of an opened archive: stored bytes are copied or viewed, deflated ones are
// inflated in bounded chunks, never past the declared size or the limits, and every path ends
// with a CRC check.
#include <zlib.h>

#include <algorithm>
#include <string>

#include "encoding/hex.hpp"
#include "safetensors/error.hpp"
#include "zip/archive.hpp"
#include "zip/crc32.hpp"
#include "zip/records.hpp"

namespace safetensors::detail::zip {
namespace {

using Sink = std::function<void(std::span<const std::byte>)>;

constexpr std::uint64_t chunk = std::uint64_t{1} << 20;
// Small entries may compress better than any sane ratio (a page of zeros); the ratio cap
// is for entries large enough to hurt.
constexpr std::uint64_t ratio_grace = std::uint64_t{1} << 20;
// read() reserves at most this much up front; a larger entry grows as its bytes arrive,
// so a lying size costs nothing before the data proves it.
constexpr std::uint64_t max_reserve = std::uint64_t{256} << 20;

void check_range(const Source& source, const Entry& e) {
  if (e.data_offset > source.size() || source.size() - e.data_offset < e.compressed_size) {
    fail_entry(source, e.name,
               "data at offset " + std::to_string(e.data_offset) + " (" +
                   std::to_string(e.compressed_size) + " bytes) lies outside the " +
                   std::to_string(source.size()) + "-byte source");
  }
}

void check_limits(const Source& source, const Limits& limits, const Entry& e) {
  if (e.size > limits.max_inflated_size) {
    fail_entry(source, e.name,
               "inflates to " + std::to_string(e.size) + " bytes, more than the limit of " +
                   std::to_string(limits.max_inflated_size));
  }
  std::uint64_t allowed = 0;
  if (e.size > ratio_grace &&
      (__builtin_mul_overflow(e.compressed_size, limits.max_ratio, &allowed) ? false
                                                                             : e.size > allowed)) {
    fail_entry(source, e.name,
               "inflates " + std::to_string(e.compressed_size) + " bytes to " +
                   std::to_string(e.size) + ", a ratio above the limit of " +
                   std::to_string(limits.max_ratio));
  }
}

void check_crc(const Source& source, const Entry& e, std::uint32_t crc) {
  if (crc != e.crc32) {
    fail_entry(source, e.name,
               "CRC-32 of the data is " + hex_number(crc, 8) + ", the central directory says " +
                   hex_number(e.crc32, 8));
  }
}

// Hands `sink` the entry's bytes as they lie in the source, in chunks of at most `chunk`.
template <class F>
void for_each_raw_chunk(const Source& source, const Entry& e, F&& sink) {
  std::vector<std::byte> buffer;
  for (std::uint64_t done = 0; done < e.compressed_size;) {
    const std::uint64_t n = std::min(chunk, e.compressed_size - done);
    sink(zip::fetch(source, e.data_offset + done, n, buffer));
    done += n;
  }
}

struct Inflater {
  z_stream z{};
  Inflater() {
    if (inflateInit2(&z, -15) != Z_OK) throw Error(ErrorCode::io, "cannot initialise zlib");
  }
  ~Inflater() { inflateEnd(&z); }
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;
};

// Inflates a raw deflate entry into `sink`, refusing output beyond the declared size, a
// stream that ends early or late, and corrupt data.
void inflate_entry(const Source& source, const Entry& e, const Sink& sink) {
  Inflater inflater;
  z_stream& z = inflater.z;
  std::vector<std::byte> out(static_cast<std::size_t>(std::min(chunk, e.size + 1)));
  std::vector<std::byte> in_buffer;
  std::uint64_t fed = 0, produced = 0;
  bool finished = false;
  while (!finished) {
    if (z.avail_in == 0 && fed < e.compressed_size) {
      const std::uint64_t n = std::min(chunk, e.compressed_size - fed);
      const auto in = zip::fetch(source, e.data_offset + fed, n, in_buffer);
      // zlib never writes through next_in.
      z.next_in = const_cast<Bytef*>(reinterpret_cast<const Bytef*>(in.data()));
      z.avail_in = static_cast<uInt>(n);
      fed += n;
    }
    // One byte past the declared size is enough to catch a liar.
    const std::uint64_t room = std::min<std::uint64_t>(out.size(), e.size - produced + 1);
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(room);
    const int status = inflate(&z, Z_NO_FLUSH);
    if (status != Z_OK && status != Z_STREAM_END && status != Z_BUF_ERROR) {
      fail_entry(source, e.name,
                 std::string("corrupt deflate data (") + (z.msg ? z.msg : "zlib error") +
                     ") after " + std::to_string(produced) + " output bytes");
    }
    const std::uint64_t got = room - z.avail_out;
    produced += got;
    if (produced > e.size) {
      fail_entry(source, e.name,
                 "inflates to more than the " + std::to_string(e.size) +
                     " bytes the central directory declares");
    }
    if (got > 0) sink(std::span<const std::byte>(out).first(static_cast<std::size_t>(got)));
    finished = status == Z_STREAM_END;
    if (status == Z_BUF_ERROR && (z.avail_in != 0 || fed == e.compressed_size)) {
      fail_entry(source, e.name,
                 "the deflate stream ends early, after " + std::to_string(fed) +
                     " compressed and " + std::to_string(produced) + " output bytes");
    }
  }
  const std::uint64_t left = z.avail_in + (e.compressed_size - fed);
  if (left != 0) {
    fail_entry(source, e.name,
               std::to_string(left) +
                   " compressed bytes follow the end of the deflate "
                   "stream");
  }
  if (produced != e.size) {
    fail_entry(source, e.name,
               "inflates to " + std::to_string(produced) +
                   " bytes, the central directory declares " + std::to_string(e.size));
  }
}

}  // namespace

void Archive::stream(const Entry& entry,
                     const std::function<void(std::span<const std::byte>)>& consumer) const {
  check_range(*source_, entry);
  std::uint32_t crc = 0;
  const Sink sink = [&](std::span<const std::byte> bytes) {
    crc = crc32_update(crc, bytes);
    consumer(bytes);
  };
  if (entry.method == 0) {
    for_each_raw_chunk(*source_, entry, sink);
  } else {
    check_limits(*source_, limits_, entry);
    inflate_entry(*source_, entry, sink);
  }
  check_crc(*source_, entry, crc);
}

std::vector<std::byte> Archive::read(const Entry& entry) const {
  std::vector<std::byte> out;
  if (entry.method == 0) {
    check_range(*source_, entry);
    out.resize(static_cast<std::size_t>(entry.compressed_size));
    source_->read_at(entry.data_offset, out);
    check_crc(*source_, entry, crc32_parallel(out));
    return out;
  }
  check_limits(*source_, limits_, entry);
  out.reserve(static_cast<std::size_t>(std::min(entry.size, max_reserve)));
  stream(entry, [&](std::span<const std::byte> bytes) {
    out.insert(out.end(), bytes.begin(), bytes.end());
  });
  return out;
}

std::span<const std::byte> Archive::stored_view(const Entry& entry) const {
  const std::span<const std::byte> mapped = source_->mapped();
  if (entry.method != 0 || mapped.size() != source_->size()) return {};
  check_range(*source_, entry);
  const auto view = mapped.subspan(static_cast<std::size_t>(entry.data_offset),
                                   static_cast<std::size_t>(entry.compressed_size));
  const bool ours = &entry >= entries_.data() && &entry < entries_.data() + entries_.size();
  std::atomic<bool>* checked = ours ? &crc_checked_[&entry - entries_.data()] : nullptr;
  if (checked == nullptr || !checked->load(std::memory_order_acquire)) {
    check_crc(*source_, entry, crc32_parallel(view));
    if (checked != nullptr) checked->store(true, std::memory_order_release);
  }
  return view;
}

}  // namespace safetensors::detail::zip
