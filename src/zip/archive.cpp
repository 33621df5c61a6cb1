// Opening an archive: the end records, the central directory and every local header are
// checked against each other before any entry is handed out. Every field comes from the
// file, so all arithmetic on them is checked.
#include "zip/archive.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>
#include <utility>

#include "encoding/hex.hpp"
#include "encoding/little_endian.hpp"
#include "error/messages.hpp"
#include "safetensors/error.hpp"
#include "zip/records.hpp"

namespace safetensors::detail::zip {
namespace {

using Bytes = std::span<const std::byte>;

constexpr std::uint32_t local_signature = 0x04034b50;
constexpr std::uint32_t central_signature = 0x02014b50;
constexpr std::uint32_t end_signature = 0x06054b50;
constexpr std::uint32_t zip64_end_signature = 0x06064b50;
constexpr std::uint32_t zip64_locator_signature = 0x07064b50;
constexpr std::uint32_t descriptor_signature = 0x08074b50;
constexpr std::uint16_t zip64_extra_id = 0x0001;

constexpr std::uint64_t local_size = 30;
constexpr std::uint64_t central_size = 46;
constexpr std::uint64_t end_size = 22;
constexpr std::uint64_t locator_size = 20;
constexpr std::uint64_t zip64_end_size = 56;
constexpr std::uint64_t max_comment = 0xFFFF;

constexpr std::uint16_t encrypted_bit = 1u << 0;
constexpr std::uint16_t descriptor_bit = 1u << 3;
constexpr std::uint16_t patched_bit = 1u << 5;
constexpr std::uint16_t strong_encryption_bit = 1u << 6;
constexpr std::uint16_t masked_header_bit = 1u << 13;

constexpr std::uint32_t max16 = 0xFFFF;
constexpr std::uint32_t max32 = 0xFFFFFFFF;

// A record field of `width` bytes at `at`.
std::uint64_t le(Bytes b, std::size_t at, std::size_t width) {
  return load_le_bytes(b.subspan(at, width));
}
std::uint16_t u16(Bytes b, std::size_t at) {
  return load_le<std::uint16_t>(b.subspan(at));
}
std::uint32_t u32(Bytes b, std::size_t at) {
  return load_le<std::uint32_t>(b.subspan(at));
}
std::uint64_t u64(Bytes b, std::size_t at) {
  return load_le<std::uint64_t>(b.subspan(at));
}

std::string range(std::uint64_t begin, std::uint64_t end) {
  std::string out(1, '[');
  out += std::to_string(begin);
  out += ", ";
  out += std::to_string(end);
  out += ')';
  return out;
}

// What the central directory says about one member.
struct Central {
  std::string name;
  std::uint16_t flags = 0;
  std::uint16_t method = 0;
  std::uint32_t crc = 0;
  std::uint64_t compressed = 0;
  std::uint64_t size = 0;
  std::uint64_t local_offset = 0;
};

// The span of the file a member occupies: local header, data and data descriptor.
struct Extent {
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
  // An empty entry's descriptor reads the same with 32- and 64-bit sizes; the longer form
  // then ends here instead, and the neighbour decides.
  std::uint64_t alternative_end = 0;
  std::size_t index = 0;
};

struct End {
  std::uint64_t count = 0;
  std::uint64_t directory_offset = 0;
  std::uint64_t directory_size = 0;
  std::uint64_t records_begin = 0;  // where the (ZIP64) end records start
};

class Opener {
 public:
  Opener(const Source& source, const Limits& limits) : source_(source), limits_(limits) {}

  End locate_end() {
    const std::uint64_t size = source_.size();
    if (size < end_size) {
      fail(std::to_string(size) +
           " bytes is too short for a zip archive (its end record alone takes " +
           std::to_string(end_size) + ")");
    }
    const std::uint64_t window = std::min(size, end_size + max_comment);
    const Bytes tail = fetch(size - window, window);
    std::optional<std::uint64_t> found;
    for (std::uint64_t pos = window - end_size + 1; pos-- > 0;) {
      if (u32(tail, pos) != end_signature || u16(tail, pos + 20) != window - end_size - pos) {
        continue;
      }
      // A comment that holds a second well-formed end record would let two readers see two
      // different archives.
      if (found) {
        fail("two end of central directory records (at offsets " +
             std::to_string(size - window + pos) + " and " +
             std::to_string(size - window + *found) + ")");
      }
      found = pos;
    }
    if (!found) {
      fail("no end of central directory record that ends the file in its last " +
           std::to_string(window) + " bytes");
    }
    const Bytes eocd = tail.subspan(*found, end_size);
    const std::uint64_t eocd_at = size - window + *found;

    End end;
    end.records_begin = eocd_at;
    std::uint64_t disk = u16(eocd, 4), directory_disk = u16(eocd, 6);
    std::uint64_t disk_count = u16(eocd, 8);
    end.count = u16(eocd, 10);
    end.directory_size = u32(eocd, 12);
    end.directory_offset = u32(eocd, 16);

    if (eocd_at >= locator_size &&
        u32(fetch(eocd_at - locator_size, 4), 0) == zip64_locator_signature) {
      const End z = read_zip64_end(eocd_at - locator_size);
      disk = reconcile("disk number", disk, max16, 0);
      directory_disk = reconcile("central directory disk", directory_disk, max16, 0);
      disk_count = reconcile("entries on this disk", disk_count, max16, z.count);
      end.count = reconcile("entry count", end.count, max16, z.count);
      end.directory_size =
          reconcile("central directory size", end.directory_size, max32, z.directory_size);
      end.directory_offset =
          reconcile("central directory offset", end.directory_offset, max32, z.directory_offset);
      end.records_begin = z.records_begin;
    }
    if (disk != 0 || directory_disk != 0 || disk_count != end.count) {
      fail("multi-disk archives are not supported (disk " + std::to_string(disk) +
           ", central directory on disk " + std::to_string(directory_disk) + ", " +
           std::to_string(disk_count) + " of " + std::to_string(end.count) +
           " entries on this disk)");
    }

    const std::uint64_t directory_end =
        add(end.directory_offset, end.directory_size, "central directory end");
    if (directory_end != end.records_begin) {
      fail("the central directory " + range(end.directory_offset, directory_end) +
           " does not end where the end records begin (offset " +
           std::to_string(end.records_begin) + ")");
    }
    if (end.count > limits_.max_entries) {
      fail(std::to_string(end.count) + " entries, more than the limit of " +
           std::to_string(limits_.max_entries));
    }
    if (end.count > end.directory_size / central_size) {
      fail("the end record announces " + std::to_string(end.count) +
           " entries, but a central directory of " + std::to_string(end.directory_size) +
           " bytes holds at most " + std::to_string(end.directory_size / central_size));
    }
    return end;
  }

  std::vector<Central> read_directory(const End& end) {
    std::vector<std::byte> buffer;
    const Bytes dir = fetch(end.directory_offset, end.directory_size, buffer);
    std::vector<Central> out;
    out.reserve(static_cast<std::size_t>(end.count));
    std::uint64_t pos = 0;
    while (pos < dir.size()) {
      const std::uint64_t at = end.directory_offset + pos;
      if (out.size() == end.count) {
        fail("the central directory holds more than the " + std::to_string(end.count) +
             " entries the end record announces (another record at offset " + std::to_string(at) +
             ")");
      }
      if (dir.size() - pos < central_size || u32(dir, pos) != central_signature) {
        fail("central directory record " + std::to_string(out.size()) + " at offset " +
             std::to_string(at) + " is truncated or has no signature");
      }
      const Bytes h = dir.subspan(pos);
      const std::uint64_t name_length = u16(h, 28), extra_length = u16(h, 30);
      const std::uint64_t record = central_size + name_length + extra_length + u16(h, 32);
      if (record > h.size()) {
        fail("central directory record " + std::to_string(out.size()) + " at offset " +
             std::to_string(at) + " runs past the directory's end");
      }
      Central c;
      c.name.assign(reinterpret_cast<const char*>(h.data() + central_size), name_length);
      c.flags = u16(h, 8);
      c.method = u16(h, 10);
      c.crc = u32(h, 16);
      c.compressed = u32(h, 20);
      c.size = u32(h, 24);
      c.local_offset = u32(h, 42);
      std::uint64_t disk = u16(h, 34);
      const Bytes extra = h.subspan(central_size + name_length, extra_length);
      const bool any_placeholder =
          c.size == max32 || c.compressed == max32 || c.local_offset == max32 || disk == max16;
      if (any_placeholder) {
        const Bytes z = zip64_field(c.name, extra, "central directory");
        std::size_t next = 0;
        const auto take = [&](std::uint64_t& field, std::uint64_t placeholder, std::size_t width) {
          if (field != placeholder) return;
          if (next + width > z.size()) {
            fail_entry(c.name, "the central directory's ZIP64 field is too short (" +
                                   std::to_string(z.size()) + " bytes)");
          }
          field = le(z, next, width);
          next += width;
        };
        take(c.size, max32, 8);
        take(c.compressed, max32, 8);
        take(c.local_offset, max32, 8);
        take(disk, max16, 4);
      }
      check_name(c);
      check_flags(c.name, c.flags, "central directory");
      if (disk != 0) {
        fail_entry(c.name, "lies on disk " + std::to_string(disk) +
                               " (multi-disk archives are not supported)");
      }
      if (c.method != 0 && c.method != 8) {
        fail_entry(c.name, "compression method " + std::to_string(c.method) +
                               " is not supported (only 0, stored, and 8, deflate)");
      }
      if (c.method == 0 && c.compressed != c.size) {
        fail_entry(c.name, "stored with " + std::to_string(c.compressed) +
                               " compressed bytes but " + std::to_string(c.size) +
                               " uncompressed bytes");
      }
      if (c.name.ends_with('/') && c.size != 0) {
        fail_entry(c.name, "a folder entry that holds " + std::to_string(c.size) + " bytes");
      }
      out.push_back(std::move(c));
      pos += record;
    }
    if (out.size() != end.count) {
      fail("the end record announces " + std::to_string(end.count) +
           " entries, the central directory holds " + std::to_string(out.size()));
    }
    return out;
  }

  // Checks the local header of `c` against it; returns the entry and the bytes it occupies.
  std::pair<Entry, Extent> read_local(const Central& c, std::uint64_t limit) {
    if (c.local_offset > limit || limit - c.local_offset < local_size) {
      fail_entry(c.name, "local header offset " + std::to_string(c.local_offset) +
                             " is outside the entries' area " + range(0, limit));
    }
    std::vector<std::byte> fixed_buffer;
    const Bytes h = fetch(c.local_offset, local_size, fixed_buffer);
    if (u32(h, 0) != local_signature) {
      fail_entry(c.name, "no local header signature at offset " + std::to_string(c.local_offset));
    }
    const std::uint16_t flags = u16(h, 6), method = u16(h, 8);
    const std::uint32_t crc = u32(h, 14);
    std::uint64_t compressed = u32(h, 18), size = u32(h, 22);
    const std::uint64_t name_length = u16(h, 26), extra_length = u16(h, 28);
    const std::uint64_t data_offset = c.local_offset + local_size + name_length + extra_length;
    if (data_offset > limit) {
      fail_entry(c.name, "local header " + range(c.local_offset, data_offset) +
                             " runs past the entries' area " + range(0, limit));
    }
    std::vector<std::byte> variable_buffer;
    const Bytes variable =
        fetch(c.local_offset + local_size, name_length + extra_length, variable_buffer);
    const std::string_view local_name(reinterpret_cast<const char*>(variable.data()), name_length);
    if (local_name != c.name) {
      fail_entry(c.name, "the local header names it " + quote(local_name));
    }
    check_flags(c.name, flags, "local header");
    if (flags != c.flags) {
      fail_entry(c.name, "flags " + hex_number(flags) + " in the local header, " +
                             hex_number(c.flags) + " in the central directory");
    }
    if (method != c.method) {
      fail_entry(c.name, "method " + std::to_string(method) + " in the local header, " +
                             std::to_string(c.method) + " in the central directory");
    }
    if (size == max32 || compressed == max32) {
      const Bytes z = zip64_field(c.name, variable.subspan(name_length), "local header");
      // The local field must hold both sizes; a writer that gives only the placeholder ones
      // is tolerated.
      if (z.size() >= 16) {
        size = u64(z, 0);
        compressed = u64(z, 8);
      } else {
        std::size_t next = 0;
        for (std::uint64_t* field : {&size, &compressed}) {
          if (*field != max32) continue;
          if (next + 8 > z.size())
            fail_entry(c.name, "the local header's ZIP64 field is too short");
          *field = u64(z, next);
          next += 8;
        }
      }
    }
    // With a data descriptor the local header may leave these zero.
    const bool deferred = (c.flags & descriptor_bit) != 0;
    const auto agree = [&](const char* what, std::uint64_t local, std::uint64_t central) {
      if (local == central || (deferred && local == 0)) return;
      fail_entry(c.name, std::string(what) + " " + std::to_string(local) +
                             " in the local header, " + std::to_string(central) +
                             " in the central directory");
    };
    agree("CRC-32", crc, c.crc);
    agree("compressed size", compressed, c.compressed);
    agree("size", size, c.size);

    std::uint64_t data_end = 0;
    if (__builtin_add_overflow(data_offset, c.compressed, &data_end)) {
      fail_entry(c.name, "data offset " + std::to_string(data_offset) + " + compressed size " +
                             std::to_string(c.compressed) + " overflows 64 bits");
    }
    if (data_end > limit) {
      fail_entry(c.name, "data " + range(data_offset, data_end) + " runs past the entries' area " +
                             range(0, limit));
    }
    Extent extent{c.local_offset, data_end, 0, 0};
    if (deferred) {
      const auto [length, alternative] = descriptor_length(c, data_end, limit);
      extent.end += length;
      if (alternative != 0) extent.alternative_end = data_end + alternative;
    }
    Entry e;
    e.name = c.name;
    e.method = c.method;
    e.crc32 = c.crc;
    e.compressed_size = c.compressed;
    e.size = c.size;
    e.data_offset = data_offset;
    return {std::move(e), extent};
  }

  [[noreturn]] void fail(const std::string& what) const {
    detail::fail(ErrorCode::invalid_archive, source_.name(), what);
  }
  [[noreturn]] void fail_entry(std::string_view name, const std::string& what) const {
    zip::fail_entry(source_, name, what);
  }

 private:
  Bytes fetch(std::uint64_t offset, std::uint64_t length) {
    return zip::fetch(source_, offset, length, scratch_);
  }
  Bytes fetch(std::uint64_t offset, std::uint64_t length, std::vector<std::byte>& buffer) {
    return zip::fetch(source_, offset, length, buffer);
  }

  std::uint64_t add(std::uint64_t a, std::uint64_t b, const char* what) const {
    std::uint64_t out = 0;
    if (__builtin_add_overflow(a, b, &out)) {
      fail(std::string(what) + " overflows: " + std::to_string(a) + " + " + std::to_string(b));
    }
    return out;
  }

  // A value of the end record that is either the ZIP64 placeholder or the ZIP64 value.
  std::uint64_t reconcile(const char* what, std::uint64_t classic, std::uint64_t placeholder,
                          std::uint64_t zip64) const {
    if (classic == placeholder || classic == zip64) return zip64;
    fail(std::string(what) + " is " + std::to_string(classic) + " in the end record, " +
         std::to_string(zip64) + " in the ZIP64 end record");
  }

  End read_zip64_end(std::uint64_t locator_at) {
    const Bytes locator = fetch(locator_at, locator_size);
    const std::uint64_t locator_disk = u32(locator, 4), record_at = u64(locator, 8);
    const std::uint64_t disks = u32(locator, 16);
    if (locator_disk != 0 || disks > 1) {
      fail("multi-disk archives are not supported (ZIP64 end record on disk " +
           std::to_string(locator_disk) + " of " + std::to_string(disks) + ")");
    }
    if (record_at > locator_at || locator_at - record_at < zip64_end_size) {
      fail("the ZIP64 end record offset " + std::to_string(record_at) +
           " leaves no room for it before its locator at " + std::to_string(locator_at));
    }
    const Bytes r = fetch(record_at, zip64_end_size);
    if (u32(r, 0) != zip64_end_signature) {
      fail("no ZIP64 end record signature at offset " + std::to_string(record_at));
    }
    const std::uint64_t record_size = u64(r, 4);
    if (record_size != locator_at - record_at - 12) {
      fail("the ZIP64 end record at " + std::to_string(record_at) + " gives its size as " +
           std::to_string(record_size) + ", but its locator is at " + std::to_string(locator_at));
    }
    const std::uint64_t disk = u32(r, 16), directory_disk = u32(r, 20);
    End z;
    z.count = u64(r, 32);
    z.directory_size = u64(r, 40);
    z.directory_offset = u64(r, 48);
    z.records_begin = record_at;
    if (disk != 0 || directory_disk != 0 || u64(r, 24) != z.count) {
      fail("multi-disk archives are not supported (ZIP64 end record: disk " + std::to_string(disk) +
           ", central directory on disk " + std::to_string(directory_disk) + ", " +
           std::to_string(u64(r, 24)) + " of " + std::to_string(z.count) +
           " entries on this disk)");
    }
    return z;
  }

  // The data of the one ZIP64 extended information field in `extra`.
  Bytes zip64_field(std::string_view name, Bytes extra, const char* where) const {
    std::optional<Bytes> found;
    std::size_t pos = 0;
    while (extra.size() - pos >= 4) {
      const std::uint16_t id = u16(extra, pos);
      const std::size_t length = u16(extra, pos + 2);
      if (length > extra.size() - pos - 4) {
        fail_entry(name, std::string("extra field ") + hex_number(id) + " in the " + where +
                             " runs past the extra data (" + std::to_string(length) + " bytes)");
      }
      if (id == zip64_extra_id) {
        if (found) fail_entry(name, std::string("two ZIP64 fields in the ") + where);
        found = extra.subspan(pos + 4, length);
      }
      pos += 4 + length;
    }
    if (!found) {
      fail_entry(name, std::string("the ") + where +
                           " has a ZIP64 placeholder size or offset but no ZIP64 field");
    }
    return *found;
  }

  // The length of the data descriptor after `data_end`: 12 or 20 bytes (32- or 64-bit
  // sizes), plus 4 when it has its optional signature. It must repeat the central values.
  // The second length is the 64-bit form when the 32-bit one matches too (0 otherwise).
  std::pair<std::uint64_t, std::uint64_t> descriptor_length(const Central& c,
                                                            std::uint64_t data_end,
                                                            std::uint64_t limit) {
    const std::uint64_t available = std::min<std::uint64_t>(24, limit - data_end);
    const Bytes d = fetch(data_end, available);
    const bool signed_form = available >= 4 && u32(d, 0) == descriptor_signature;
    const std::uint64_t skip = signed_form ? 4 : 0;
    std::pair<std::uint64_t, std::uint64_t> found{0, 0};
    for (const std::uint64_t width : {4, 8}) {
      const std::uint64_t length = skip + 4 + 2 * width;
      if (length > available) break;
      if (u32(d, skip) == c.crc && le(d, skip + 4, width) == c.compressed &&
          le(d, skip + 4 + width, width) == c.size) {
        (found.first == 0 ? found.first : found.second) = length;
      }
    }
    if (found.first != 0) return found;
    fail_entry(c.name, "the data descriptor at offset " + std::to_string(data_end) +
                           " does not repeat the central directory's CRC-32 " + hex_number(c.crc) +
                           ", compressed size " + std::to_string(c.compressed) + " and size " +
                           std::to_string(c.size));
  }

  void check_flags(std::string_view name, std::uint16_t flags, const char* where) const {
    const auto refuse = [&](const char* what) {
      fail_entry(name,
                 std::string(what) + " (flags " + hex_number(flags) + " in the " + where + ")");
    };
    if (flags & (encrypted_bit | strong_encryption_bit | masked_header_bit)) refuse("encrypted");
    if (flags & patched_bit) refuse("patched data are not supported");
  }

  // Refuses names that could reach outside a folder they are extracted to, or that two
  // tools would spell differently.
  void check_name(const Central& c) const {
    const std::string& name = c.name;
    const auto refuse = [&](const char* what) { fail_entry(name, what); };
    if (name.empty()) refuse("empty name");
    if (name.find('\0') != std::string::npos) refuse("NUL byte in the name");
    if (name.find('\\') != std::string::npos) refuse("backslash in the name");
    if (name.front() == '/') refuse("absolute path");
    if (name.size() >= 2 && name[1] == ':') refuse("absolute path (drive letter)");
    std::size_t begin = 0;
    while (true) {
      const std::size_t slash = name.find('/', begin);
      const std::string_view part =
          std::string_view(name).substr(begin, slash == std::string::npos ? slash : slash - begin);
      if (part == "..") refuse("`..` path component");
      if (part == ".") refuse("`.` path component");
      if (slash == std::string::npos) break;
      if (part.empty()) refuse("empty path component");
      begin = slash + 1;
      if (begin == name.size()) break;  // a folder entry: "a/b/"
    }
  }

  const Source& source_;
  const Limits& limits_;
  std::vector<std::byte> scratch_;
};

std::string_view first_component(std::string_view name) {
  const std::size_t slash = name.find('/');
  return slash == std::string_view::npos ? std::string_view() : name.substr(0, slash);
}

}  // namespace

bool looks_like_zip(std::span<const std::byte> prefix) noexcept {
  static constexpr std::array<unsigned char, 4> magic = {'P', 'K', 3, 4};
  return prefix.size() >= magic.size() && std::memcmp(prefix.data(), magic.data(), 4) == 0;
}

Archive Archive::open(const Source& source, const Limits& limits, bool require_single_folder) {
  Opener opener(source, limits);
  const End end = opener.locate_end();
  const std::vector<Central> directory = opener.read_directory(end);

  Archive archive;
  archive.source_ = &source;
  archive.limits_ = limits;
  archive.by_name_.resize(directory.size());
  for (std::size_t i = 0; i < directory.size(); ++i) archive.by_name_[i] = i;
  std::sort(archive.by_name_.begin(), archive.by_name_.end(),
            [&](std::size_t a, std::size_t b) { return directory[a].name < directory[b].name; });
  for (std::size_t i = 1; i < archive.by_name_.size(); ++i) {
    const std::size_t a = archive.by_name_[i - 1], b = archive.by_name_[i];
    if (directory[a].name == directory[b].name) {
      opener.fail_entry(directory[a].name, "appears twice in the central directory (records " +
                                               std::to_string(std::min(a, b)) + " and " +
                                               std::to_string(std::max(a, b)) + ")");
    }
  }

  std::vector<Extent> extents;
  extents.reserve(directory.size());
  archive.entries_.reserve(directory.size());
  for (std::size_t i = 0; i < directory.size(); ++i) {
    auto [entry, extent] = opener.read_local(directory[i], end.directory_offset);
    extent.index = i;
    extents.push_back(extent);
    archive.entries_.push_back(std::move(entry));
  }
  std::sort(extents.begin(), extents.end(),
            [](const Extent& a, const Extent& b) { return a.begin < b.begin; });
  // Entries must tile the file up to the central directory: bytes that belong to no entry
  // are what a reader that walks local headers would see and we would not.
  std::uint64_t covered = 0;
  for (std::size_t i = 0; i < extents.size(); ++i) {
    Extent& b = extents[i];
    const std::uint64_t next = i + 1 < extents.size() ? extents[i + 1].begin : end.directory_offset;
    if (b.alternative_end != 0 && b.alternative_end == next) b.end = next;
    const std::string& name = directory[b.index].name;
    if (i > 0 && b.begin < covered) {
      const Extent& a = extents[i - 1];
      opener.fail_entry(name, "its bytes " + range(b.begin, b.end) + " overlap those of entry " +
                                  quote(directory[a.index].name) + " " + range(a.begin, a.end));
    }
    if (b.begin > covered) {
      opener.fail_entry(name, "the bytes " + range(covered, b.begin) +
                                  " before its local header belong to no entry");
    }
    covered = b.end;
  }
  if (covered != end.directory_offset) {
    opener.fail("the bytes " + range(covered, end.directory_offset) +
                " before the central directory belong to no entry");
  }

  if (!directory.empty()) {
    const std::string_view folder = first_component(directory.front().name);
    bool shared = !folder.empty();
    for (const Central& c : directory) {
      if (first_component(c.name) == folder) continue;
      shared = false;
      if (require_single_folder) {
        opener.fail_entry(c.name, "lies outside the top-level folder " + quote(folder) +
                                      " of entry " + quote(directory.front().name));
      }
    }
    if (shared) archive.top_folder_ = std::string(folder);
  }
  archive.crc_checked_ = std::vector<std::atomic<bool>>(archive.entries_.size());
  return archive;
}

const Entry* Archive::find(std::string_view name) const noexcept {
  const auto it =
      std::lower_bound(by_name_.begin(), by_name_.end(), name,
                       [&](std::size_t i, std::string_view key) { return entries_[i].name < key; });
  if (it == by_name_.end() || entries_[*it].name != name) return nullptr;
  return &entries_[*it];
}

}  // namespace safetensors::detail::zip
