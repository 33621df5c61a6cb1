// A strict reader for the zip archives torch.save and numpy.savez write. Private to the
// library: the converter and the scanner use it through `Source`.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "safetensors/source.hpp"

namespace safetensors::detail::zip {

/// Caps that keep a hostile archive from exhausting memory or time.
struct Limits {
  std::uint64_t max_entries = 1'000'000;
  /// Largest uncompressed size of one deflated entry we inflate.
  std::uint64_t max_inflated_size = std::uint64_t{16} << 30;
  /// Largest uncompressed/compressed ratio of a deflated entry (zip bombs).
  std::uint64_t max_ratio = 1000;
};

/// One member, as described by the central directory and confirmed by its local header.
struct Entry {
  std::string name;
  std::uint16_t method = 0;  // 0 stored, 8 deflate; nothing else is accepted
  std::uint32_t crc32 = 0;
  std::uint64_t compressed_size = 0;
  std::uint64_t size = 0;         // uncompressed
  std::uint64_t data_offset = 0;  // of the (compressed) bytes in the source
};

/// True when `prefix` starts with a local file header signature (PK\3\4).
[[nodiscard]] bool looks_like_zip(std::span<const std::byte> prefix) noexcept;

/// A validated archive. Opening checks the whole central directory and every local header
/// (ZIP64 included) and refuses: duplicate names, names whose local and central spellings
/// differ, encrypted or patched entries (flag bits in either header), methods other than
/// stored/deflate, sizes or offsets that overflow or point outside the source, overlapping
/// entries, absolute paths, `..` components, backslashes, NUL bytes, and more than one
/// top-level folder when `require_single_folder` is set. Errors are `Error(invalid_archive)`
/// naming the source, the entry and the values.
class Archive {
 public:
  [[nodiscard]] static Archive open(const Source& source, const Limits& limits = {},
                                    bool require_single_folder = false);

  /// Entries in central-directory order.
  const std::vector<Entry>& entries() const noexcept { return entries_; }
  /// nullptr when absent.
  const Entry* find(std::string_view name) const noexcept;
  /// The folder every entry sits under ("" when entries are at the top level or mixed).
  const std::string& top_folder() const noexcept { return top_folder_; }

  /// The whole entry, inflated if needed, CRC checked. Throws on a CRC mismatch or when
  /// inflation would pass the limits.
  std::vector<std::byte> read(const Entry& entry) const;
  /// Streams the entry's uncompressed bytes in order, in bounded chunks, then checks the
  /// CRC (so a consumer must not commit anything before this returns).
  void stream(const Entry& entry,
              const std::function<void(std::span<const std::byte>)>& consumer) const;
  /// A stored entry's bytes inside a mapped source, CRC checked on the first call only (a
  /// converter may come back to a storage many times); empty when the entry is deflated or
  /// the source is not mapped.
  std::span<const std::byte> stored_view(const Entry& entry) const;

  const Source& source() const noexcept { return *source_; }

 private:
  const Source* source_ = nullptr;
  Limits limits_;
  std::vector<Entry> entries_;
  std::vector<std::size_t> by_name_;
  std::string top_folder_;
  // Per entry: its stored bytes passed the CRC check (stored_view).
  mutable std::vector<std::atomic<bool>> crc_checked_;
};

}  // namespace safetensors::detail::zip
