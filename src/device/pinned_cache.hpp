// Pinned staging memory kept from one device load for the next (issue 13). Pinning is slow:
// cudaHostAlloc pins and maps every page, tens of milliseconds for the ring's hundreds of MB,
// paid on every load before the first byte can be staged. The cache keeps one ring's block
// between loads so that only the first load of a process pays it.
#pragma once

#include <cstddef>
#include <mutex>
#include <utility>

namespace safetensors::detail {

/// At most one block of pinned host memory, kept while no load uses it; thread-safe. The cache
/// only holds the block: whoever takes one out uses it or frees it through its device
/// (DeviceApi::free_pinned), and no device operation runs under the cache's lock.
class PinnedCache {
 public:
  struct Block {
    std::byte* data = nullptr;
    std::size_t bytes = 0;
  };

  /// The kept block, now the caller's; an empty Block when none is kept (or another load has
  /// it: concurrent loads each get their own memory).
  Block take() noexcept {
    std::lock_guard lock(mutex_);
    return std::exchange(block_, Block{});
  }

  /// Keeps `block`. When one is kept already (a concurrent load gave its block back first),
  /// keeps the larger of the two, the likelier to fit the next load, and returns the other
  /// for the caller to free; else returns an empty Block.
  [[nodiscard]] Block keep(Block block) noexcept {
    std::lock_guard lock(mutex_);
    if (block_.data != nullptr && block_.bytes >= block.bytes) return block;
    return std::exchange(block_, block);
  }

  std::size_t kept_bytes() const noexcept {
    std::lock_guard lock(mutex_);
    return block_.bytes;
  }

 private:
  mutable std::mutex mutex_;
  Block block_;
};

}  // namespace safetensors::detail
