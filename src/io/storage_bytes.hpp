// The bytes of one storage being converted: a view into a mapped source (no copy, and the
// pages can be given back when done) or a buffer of its own. Private to the library.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "safetensors/source.hpp"

namespace safetensors::detail {

class StorageBytes {
 public:
  StorageBytes() = default;
  /// Owns `bytes` (inflated, byte-swapped or read with pread).
  explicit StorageBytes(std::vector<std::byte> bytes) : owned_(std::move(bytes)), view_(owned_) {}
  /// Views `size` bytes at `offset` of a mapped `source`, which must outlive this.
  StorageBytes(const Source& source, std::uint64_t offset, std::uint64_t size)
      : view_(source.mapped().subspan(static_cast<std::size_t>(offset),
                                      static_cast<std::size_t>(size))),
        source_(&source),
        offset_(offset) {}

  // A moved vector keeps its buffer, so the view stays valid.
  StorageBytes(StorageBytes&&) noexcept = default;
  StorageBytes& operator=(StorageBytes&&) noexcept = default;
  StorageBytes(const StorageBytes&) = delete;
  StorageBytes& operator=(const StorageBytes&) = delete;

  std::span<const std::byte> bytes() const noexcept { return view_; }
  std::uint64_t size() const noexcept { return view_.size(); }
  /// True for a view into a mapped source: loading it again costs no copy.
  bool is_view() const noexcept { return source_ != nullptr; }

  /// Hands mapped pages back to the kernel (they stay in the page cache); call when the
  /// bytes will not be read again soon. Owned bytes are left alone.
  void release_pages() const noexcept {
    if (source_ != nullptr) source_->release(offset_, view_.size());
  }

 private:
  std::vector<std::byte> owned_;
  std::span<const std::byte> view_;
  const Source* source_ = nullptr;
  std::uint64_t offset_ = 0;
};

}  // namespace safetensors::detail
