#include "convert/copy.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

#include "error/messages.hpp"
#include "safetensors/error.hpp"

namespace safetensors::detail {

void gather(const ConvertItem& item, std::span<const std::byte> storage, std::uint64_t offset,
            std::span<std::byte> out) {
  const std::uint64_t el = element_size(item.dtype);
  if (item.contiguous) {
    std::memcpy(out.data(), storage.data() + item.offset * el + offset, out.size());
    return;
  }
  // Walk the view from element offset / el with an odometer; when the last dimension has
  // stride 1 its remaining elements are one run of bytes.
  const std::size_t rank = item.shape.size();
  std::vector<std::uint64_t> index(rank);
  std::uint64_t first = offset / el;
  for (std::size_t d = rank; d-- > 0;) {
    index[d] = first % item.shape[d];
    first /= item.shape[d];
  }
  std::uint64_t skip = offset % el;  // bytes of the first element already produced
  std::size_t written = 0;
  while (written < out.size()) {
    std::uint64_t position = item.offset;
    for (std::size_t d = 0; d < rank; ++d) position += index[d] * item.stride[d];
    const bool run = rank > 0 && item.stride[rank - 1] == 1;
    const std::uint64_t elements = run ? item.shape[rank - 1] - index[rank - 1] : 1;
    const std::size_t n = static_cast<std::size_t>(
        std::min<std::uint64_t>(elements * el - skip, out.size() - written));
    std::memcpy(out.data() + written, storage.data() + position * el + skip, n);
    written += n;
    skip = 0;
    if (rank == 0) break;
    index[rank - 1] += elements;
    for (std::size_t d = rank - 1; d > 0 && index[d] >= item.shape[d]; --d) {
      index[d] = 0;
      ++index[d - 1];
    }
  }
}

std::uint64_t element_position(const ConvertItem& item, std::uint64_t index) {
  std::uint64_t position = item.offset;
  for (std::size_t d = item.shape.size(); d-- > 0;) {
    position += (index % item.shape[d]) * item.stride[d];
    index /= item.shape[d];
  }
  return position;
}

StorageCache::StorageCache(Loader load, std::vector<std::string> uses,
                           const std::map<std::string, std::uint64_t>& sizes, std::uint64_t budget,
                           std::string origin)
    : load_(std::move(load)),
      uses_(std::move(uses)),
      sizes_(sizes),
      budget_(budget),
      origin_(std::move(origin)) {
  for (std::size_t i = 0; i < uses_.size(); ++i) positions_[uses_[i]].push_back(i);
  for (const auto& [key, p] : positions_) {
    if (__builtin_add_overflow(storage_total_, sizes_.at(key), &storage_total_)) {
      storage_total_ = UINT64_MAX;
    }
  }
  // Plus a little, so that small storages may be reloaded freely.
  if (__builtin_mul_overflow(storage_total_, max_copy_factor, &copy_limit_) ||
      __builtin_add_overflow(copy_limit_, copy_allowance, &copy_limit_)) {
    copy_limit_ = UINT64_MAX;
  }
}

std::size_t StorageCache::next_use(const std::string& key, std::size_t position) const {
  const std::vector<std::size_t>& p = positions_.at(key);
  const auto it = std::upper_bound(p.begin(), p.end(), position);
  return it == p.end() ? std::numeric_limits<std::size_t>::max() : *it;
}

std::span<const std::byte> StorageCache::acquire(std::size_t position) {
  const std::string& key = uses_.at(position);
  if (const auto it = cached_.find(key); it != cached_.end()) return it->second.bytes();
  const std::uint64_t size = sizes_.at(key);
  while (!cached_.empty() && cached_bytes_ + size > budget_) {
    auto victim = cached_.begin();
    std::size_t furthest = 0;
    for (auto it = cached_.begin(); it != cached_.end(); ++it) {
      const std::size_t next = next_use(it->first, position);
      if (next >= furthest) {
        furthest = next;
        victim = it;
      }
    }
    forget(victim);
  }
  StorageBytes bytes = load_(key);
  if (bytes.size() != size) {
    fail(ErrorCode::invalid_checkpoint, origin_,
         "storage " + quote(key) + " read as " + std::to_string(bytes.size()) +
             " bytes, expected " + std::to_string(size));
  }
  ++loads_;
  if (!bytes.is_view()) {
    copied_ += bytes.size();
    if (copied_ > copy_limit_) {
      fail(ErrorCode::invalid_checkpoint, origin_,
           "the tensors use their storages in an order that would copy them again and again (" +
               std::to_string(copied_) + " bytes so far, more than " +
               std::to_string(max_copy_factor) + " times the storages' " +
               std::to_string(storage_total_) + " bytes)");
    }
  }
  cached_bytes_ += bytes.size();
  return cached_.emplace(key, std::move(bytes)).first->second.bytes();
}

void StorageCache::release(std::size_t position) {
  const std::string& key = uses_.at(position);
  if (next_use(key, position) != std::numeric_limits<std::size_t>::max()) return;
  if (const auto it = cached_.find(key); it != cached_.end()) forget(it);
}

void StorageCache::forget(std::map<std::string, StorageBytes>::iterator it) {
  cached_bytes_ -= it->second.size();
  it->second.release_pages();
  cached_.erase(it);
}

}  // namespace safetensors::detail
