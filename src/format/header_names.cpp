#include "format/header_names.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <string_view>
#include <utility>

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
  unsigned char bytes[16] = {};
  std::memcpy(bytes, rest.data(), std::min<std::size_t>(rest.size(), sizeof bytes));
  const auto big_endian_word = [&](std::size_t at) {
    std::uint64_t word = 0;
    for (std::size_t i = 0; i < 8; ++i) word = (word << 8) | bytes[at + i];
    return word;  // compilers turn this loop into one load and a byte swap
  };
  return {big_endian_word(0), big_endian_word(8), rest, index};
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

// A key's first word and where the key is.
struct Ranked {
  std::uint64_t high;
  std::uint32_t key;
};

// The keys' places ordered by their first word: a stable LSD radix sort, 16 bits a pass,
// skipping the passes in which every key has the same digit.
std::vector<Ranked> radix_sort_by_high(const std::vector<NameKey>& keys) {
  std::vector<Ranked> ranked(keys.size()), scratch(keys.size());
  for (std::uint32_t i = 0; i < keys.size(); ++i) ranked[i] = {keys[i].high, i};
  std::vector<std::uint32_t> start(std::size_t{1} << 16);
  for (unsigned shift = 0; shift < 64; shift += 16) {
    const auto digit = [shift](const Ranked& r) {
      return static_cast<std::size_t>((r.high >> shift) & 0xffff);
    };
    std::fill(start.begin(), start.end(), 0u);
    for (const Ranked& r : ranked) ++start[digit(r)];
    if (start[digit(ranked.front())] == ranked.size()) continue;
    std::uint32_t total = 0;
    for (std::uint32_t& count : start) total += std::exchange(count, total);
    for (const Ranked& r : ranked) scratch[start[digit(r)]++] = r;
    ranked.swap(scratch);
  }
  return ranked;
}

std::size_t common_prefix(const std::vector<TensorInfo>& tensors) {
  std::string_view first = tensors.front().name;
  std::size_t common = first.size();
  for (const TensorInfo& tensor : tensors) {
    std::string_view name = tensor.name;
    // Most names keep the prefix found so far: one memcmp instead of a byte loop.
    if (name.size() >= common && std::memcmp(name.data(), first.data(), common) == 0) continue;
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
  std::vector<NameKey> keys;
  keys.reserve(tensors.size());
  for (std::uint32_t i = 0; i < tensors.size(); ++i) {
    keys.push_back(make_key(std::string_view(tensors[i].name).substr(common), i));
  }
  // A comparison sort of 200,000 keys moves them around some 18 times. Instead the first
  // word of the keys (16-byte records with the key's place) is radix-sorted, 16 bits a pass,
  // and only the groups that share it are sorted by the whole key: a third of the time for
  // names in layer order (0, 1, ..., 24999), a common order of state dicts.
  std::vector<Ranked> ranked = radix_sort_by_high(keys);
  for (std::size_t i = 0; i < ranked.size();) {
    std::size_t end = i + 1;
    while (end < ranked.size() && ranked[end].high == ranked[i].high) ++end;
    if (end - i > 1) {
      std::sort(
          ranked.begin() + static_cast<std::ptrdiff_t>(i),
          ranked.begin() + static_cast<std::ptrdiff_t>(end),
          [&](const Ranked& a, const Ranked& b) { return key_less(keys[a.key], keys[b.key]); });
    }
    i = end;
  }
  for (std::size_t i = 0; i < ranked.size(); ++i) order[i] = keys[ranked[i].key].index;
  return order;
}

}  // namespace safetensors::detail
