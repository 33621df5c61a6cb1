// Copying strided views out of storages, and the small cache that lets the writer's
// dtype-then-name order read each storage about once. Private to convert.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "convert/plan.hpp"

namespace safetensors::detail {

/// Fills `out` with the bytes [offset, offset + out.size()) of `item` laid out in C order,
/// gathered from `storage` (checked by the planner to hold every element the view reaches).
void gather(const ConvertItem& item, std::span<const std::byte> storage, std::uint64_t offset,
            std::span<std::byte> out);

/// The storage element index of the `index`-th element of `item` in C order: the
/// verifier's own arithmetic, deliberately independent of `gather`'s incremental walk.
std::uint64_t element_position(const ConvertItem& item, std::uint64_t index);

/// Storages used in a known order (one use per tensor written). A storage stays cached while
/// a later use remains and the cache holds at most `budget` bytes; when a new storage does
/// not fit, the cached one needed furthest in the future goes first (Belady's rule). Peak
/// memory is therefore max(budget, largest storage) plus the writer's chunk. Mapped storages
/// count the same way: a dropped one gives its pages back.
class StorageCache {
 public:
  using Loader = std::function<StorageBytes(const std::string&)>;

  /// `origin` names the input in the error raised when the order of uses would copy
  /// (inflate, read) storages again and again: more than `max_copy_factor` times their total
  /// size, as a hostile checkpoint alternating tiny views of two huge storages would.
  StorageCache(Loader load, std::vector<std::string> uses,
               const std::map<std::string, std::uint64_t>& sizes, std::uint64_t budget,
               std::string origin = {});

  /// The storage of use number `position`, loaded if needed.
  std::span<const std::byte> acquire(std::size_t position);
  /// Use number `position` is finished: forget its storage if no later use needs it.
  void release(std::size_t position);

  std::uint64_t loads() const noexcept { return loads_; }

 private:
  Loader load_;
  std::vector<std::string> uses_;
  std::map<std::string, std::vector<std::size_t>> positions_;
  std::map<std::string, std::uint64_t> sizes_;
  std::map<std::string, StorageBytes> cached_;
  std::uint64_t budget_ = 0;
  std::uint64_t cached_bytes_ = 0;
  std::uint64_t loads_ = 0;
  std::string origin_;
  std::uint64_t storage_total_ = 0;  // bytes of all storages used
  std::uint64_t copied_ = 0;         // bytes of owned (not mapped) storages loaded so far
  std::uint64_t copy_limit_ = 0;     // ... at most

  static constexpr std::uint64_t max_copy_factor = 4;
  static constexpr std::uint64_t copy_allowance = std::uint64_t{64} << 20;

  void forget(std::map<std::string, StorageBytes>::iterator it);
  // The next use of `key` after `position`; SIZE_MAX when none.
  std::size_t next_use(const std::string& key, std::size_t position) const;
};

}  // namespace safetensors::detail
