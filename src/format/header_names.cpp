#include "format/header_names.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <span>
#include <string_view>
#include <utility>

namespace safetensors::detail {
namespace {

// More runs than this and a sort is cheaper than repeated merging.
constexpr std::size_t max_merged_runs = 64;

// Names in big checkpoints share long prefixes ("model.layers."), so comparing whole strings
// rescans them at every step of a sort. After the prefix all names share, sixteen bytes held
// as two integers (NameKey) settle most comparisons; only ties read the names again.

// Two names after the shared prefix whose keys have the same first word, compared whole.
int compare_tied(const NameKey& a_key, std::string_view a, const NameKey& b_key,
                 std::string_view b) {
  if (a_key.low != b_key.low) return a_key.low < b_key.low ? -1 : 1;
  // Equal keys: the names agree on their first 16 bytes when both are that long (a shorter
  // one may end in NUL bytes that the zero padding hides, so it is compared whole).
  const std::size_t skip = std::min({a.size(), b.size(), std::size_t{16}}) == 16 ? 16 : 0;
  return a.substr(skip).compare(b.substr(skip));
}

// A key's first word and whose key it is.
struct Ranked {
  std::uint64_t high;
  std::uint32_t index;
};

// Below this many keys a comparison sort beats the radix sort's megabyte of counters.
constexpr std::size_t min_radix_sorted = std::size_t{1} << 14;

// Sorts by the first word, ties in index order. Many keys: a stable LSD radix sort, 16 bits a
// pass, skipping the passes in which every key has the same digit; one read counts the digits
// of all four passes.
void sort_by_high(std::vector<Ranked>& ranked) {
  if (ranked.size() < min_radix_sorted) {
    std::sort(ranked.begin(), ranked.end(), [](const Ranked& a, const Ranked& b) {
      return a.high < b.high || (a.high == b.high && a.index < b.index);
    });
    return;
  }
  constexpr unsigned digit_bits = 16;
  constexpr unsigned passes = 64 / digit_bits;
  constexpr std::size_t buckets = std::size_t{1} << digit_bits;
  const auto digit = [](std::uint64_t word, unsigned pass) {
    return static_cast<std::size_t>((word >> (pass * digit_bits)) & (buckets - 1));
  };
  std::vector<std::uint32_t> counts(passes * buckets);
  for (const Ranked& r : ranked) {
    for (unsigned pass = 0; pass < passes; ++pass) ++counts[pass * buckets + digit(r.high, pass)];
  }
  std::vector<Ranked> scratch(ranked.size());
  for (unsigned pass = 0; pass < passes; ++pass) {
    const std::span<std::uint32_t> start(counts.data() + pass * buckets, buckets);
    if (start[digit(ranked.front().high, pass)] == ranked.size()) continue;
    std::uint32_t total = 0;
    for (std::uint32_t& count : start) total += std::exchange(count, total);
    for (const Ranked& r : ranked) scratch[start[digit(r.high, pass)]++] = r;
    ranked.swap(scratch);
  }
}

// Writers (ours and the reference's) list tensors by dtype group, then by name, so a header
// is usually a few ascending runs of names: merging them beats sorting. Empty when there are
// more runs than that.
std::vector<std::uint32_t> merge_runs(std::span<const TensorEntry> tensors) {
  std::vector<std::uint32_t> order(tensors.size());
  std::iota(order.begin(), order.end(), 0u);
  auto by_name = [&](std::uint32_t a, std::uint32_t b) {
    return tensors[a].name < tensors[b].name;
  };
  // `runs` holds the boundaries: run k is [runs[k], runs[k + 1]).
  std::vector<std::size_t> runs{0};
  for (std::size_t i = 1; i < order.size(); ++i) {
    if (!by_name(order[i], order[i - 1])) continue;
    if (runs.size() == max_merged_runs) return {};
    runs.push_back(i);
  }
  runs.push_back(order.size());
  // Bottom-up: merge neighbouring runs pairwise until one is left. std::inplace_merge is
  // stable, so equal names stay in header order, next to each other.
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

// A comparison sort of 200,000 keys moves them around some 18 times. Instead the first words
// of the keys are radix-sorted, and only the groups that share one are sorted by the rest of
// their names: a third of the time for names in layer order (0, 1, ..., 24999), a common order
// of state dicts. Equal names can only meet inside such a group.
NameOrder sort_by_keys(std::span<const TensorEntry> tensors, std::size_t name_prefix) {
  const auto rest = [&](std::uint32_t i) { return tensors[i].name.substr(name_prefix); };
  std::vector<Ranked> ranked(tensors.size());
  for (std::uint32_t i = 0; i < tensors.size(); ++i) ranked[i] = {tensors[i].key.high, i};
  sort_by_high(ranked);
  NameOrder out;
  out.order.resize(ranked.size());
  for (std::size_t i = 0; i < ranked.size();) {
    std::size_t end = i + 1;
    while (end < ranked.size() && ranked[end].high == ranked[i].high) ++end;
    const auto compare = [&](std::uint32_t a, std::uint32_t b) {
      return compare_tied(tensors[a].key, rest(a), tensors[b].key, rest(b));
    };
    if (end - i > 1) {
      std::sort(ranked.begin() + static_cast<std::ptrdiff_t>(i),
                ranked.begin() + static_cast<std::ptrdiff_t>(end),
                [&](const Ranked& a, const Ranked& b) {
                  const int cmp = compare(a.index, b.index);
                  return cmp < 0 || (cmp == 0 && a.index < b.index);
                });
      for (std::size_t j = i + 1; j < end; ++j) {
        if (compare(ranked[j - 1].index, ranked[j].index) == 0) {
          out.repeats.push_back(static_cast<std::uint32_t>(j));
        }
      }
    }
    for (; i < end; ++i) out.order[i] = ranked[i].index;
  }
  return out;
}

}  // namespace

// Big-endian and zero-padded, so keys compare like the names do whenever they differ.
NameKey name_key(std::string_view name, std::size_t prefix) noexcept {
  const std::string_view rest = name.substr(std::min(prefix, name.size()));
  unsigned char bytes[16] = {};
  std::memcpy(bytes, rest.data(), std::min<std::size_t>(rest.size(), sizeof bytes));
  const auto big_endian_word = [&](std::size_t at) {
    std::uint64_t word = 0;
    for (std::size_t i = 0; i < 8; ++i) word = (word << 8) | bytes[at + i];
    return word;  // compilers turn this loop into one load and a byte swap
  };
  return {big_endian_word(0), big_endian_word(8)};
}

std::size_t shared_prefix(std::string_view a, std::string_view b, std::size_t limit) noexcept {
  limit = std::min({limit, a.size(), b.size()});
  // Most names keep the prefix found so far: one memcmp instead of a byte loop.
  if (limit == 0 || std::memcmp(a.data(), b.data(), limit) == 0) return limit;
  return static_cast<std::size_t>(std::mismatch(a.begin(), a.begin() + limit, b.begin()).first -
                                  a.begin());
}

NameOrder order_by_name(std::span<const TensorEntry> tensors, std::size_t name_prefix) {
  NameOrder out{merge_runs(tensors), {}};
  if (out.order.size() != tensors.size()) return sort_by_keys(tensors, name_prefix);
  for (std::uint32_t i = 1; i < out.order.size(); ++i) {
    if (tensors[out.order[i]].name == tensors[out.order[i - 1]].name) out.repeats.push_back(i);
  }
  return out;
}

}  // namespace safetensors::detail
