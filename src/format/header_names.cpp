#include "format/header_names.hpp"

#include <algorithm>
#include <numeric>
#include <string_view>

namespace safetensors::detail {
namespace {

// More runs than this and a sort is cheaper than repeated merging.
constexpr std::size_t max_merged_runs = 64;

// Names in big checkpoints share long prefixes ("model.layers."), so comparing whole
// strings rescans them at every step of a sort. After the prefix all names share, sixteen
// bytes held as two integers settle most comparisons; only ties read the names again.
struct NameKey {
  std::uint64_t high = 0;
  std::uint64_t low = 0;
  std::string_view rest;  // the name after the shared prefix
  std::uint32_t index = 0;
};

// Big-endian and zero-padded, so keys compare like the names do whenever they differ.
NameKey make_key(std::string_view rest, std::uint32_t index) {
  NameKey key{0, 0, rest, index};
  for (std::size_t i = 0; i < 16; ++i) {
    std::uint64_t byte = i < rest.size() ? static_cast<unsigned char>(rest[i]) : 0u;
    std::uint64_t& word = i < 8 ? key.high : key.low;
    word = (word << 8) | byte;
  }
  return key;
}

bool key_less(const NameKey& a, const NameKey& b) {
  if (a.high != b.high) return a.high < b.high;
  if (a.low != b.low) return a.low < b.low;
  // Equal keys: the names agree on their first 16 bytes when both are that long (a shorter
  // one may end in NUL bytes that the zero padding hides, so it is compared whole).
  const std::size_t skip = std::min({a.rest.size(), b.rest.size(), std::size_t{16}}) == 16 ? 16 : 0;
  int cmp = a.rest.substr(skip).compare(b.rest.substr(skip));
  return cmp < 0 || (cmp == 0 && a.index < b.index);
}

std::size_t common_prefix(const std::vector<TensorInfo>& tensors) {
  std::string_view first = tensors.front().name;
  std::size_t common = first.size();
  for (const TensorInfo& tensor : tensors) {
    std::string_view name = tensor.name;
    auto end = first.begin() + static_cast<std::ptrdiff_t>(std::min(common, name.size()));
    common = static_cast<std::size_t>(std::mismatch(first.begin(), end, name.begin()).first -
                                      first.begin());
  }
  return common;
}

}  // namespace

std::vector<std::uint32_t> order_by_name(const std::vector<TensorInfo>& tensors) {
  std::vector<std::uint32_t> order(tensors.size());
  std::iota(order.begin(), order.end(), 0u);
  auto by_name = [&](std::uint32_t a, std::uint32_t b) {
    return tensors[a].name < tensors[b].name;
  };
  // Writers (ours and the reference's) list tensors by dtype group, then by name, so a
  // header is usually a few ascending runs of names: merging them beats sorting.
  std::vector<std::size_t> runs{0};
  for (std::size_t i = 1; i < order.size() && runs.size() <= max_merged_runs; ++i) {
    if (by_name(order[i], order[i - 1])) runs.push_back(i);
  }
  if (runs.size() <= max_merged_runs) {
    runs.push_back(order.size());
    // Bottom-up: merge neighbouring runs pairwise until one is left. std::inplace_merge is
    // stable, so equal names stay in header order, next to each other.
    // `runs` holds the boundaries: run k is [runs[k], runs[k + 1]).
    const auto at = [&](std::size_t i) { return order.begin() + static_cast<std::ptrdiff_t>(i); };
    while (runs.size() > 2) {
      std::vector<std::size_t> merged{0};
      std::size_t r = 0;
      for (; r + 2 < runs.size(); r += 2) {
        std::inplace_merge(at(runs[r]), at(runs[r + 1]), at(runs[r + 2]), by_name);
        merged.push_back(runs[r + 2]);
      }
      if (r + 1 < runs.size()) merged.push_back(runs[r + 1]);  // an odd run out, as it is
      runs = std::move(merged);
    }
    return order;
  }

  std::size_t common = common_prefix(tensors);
  std::vector<NameKey> keys(tensors.size());
  for (std::uint32_t i = 0; i < keys.size(); ++i) {
    keys[i] = make_key(std::string_view(tensors[i].name).substr(common), i);
  }
  std::sort(keys.begin(), keys.end(), key_less);
  for (std::size_t i = 0; i < keys.size(); ++i) order[i] = keys[i].index;
  return order;
}

}  // namespace safetensors::detail
