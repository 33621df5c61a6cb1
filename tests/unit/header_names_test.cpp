// Name order: already sorted, a few sorted runs (merged), many runs (sorted), duplicates,
// shared prefixes and bytes above 0x7F, always equal to a stable sort by bytewise name.
#include "format/header_names.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace safetensors::detail {
namespace {

// Entries named `names`, which they point into.
struct Named {
  std::vector<std::string> names;
  std::vector<TensorEntry> entries;

  operator std::span<const TensorEntry>() const { return entries; }  // NOLINT: for the calls
};

Named named(const std::vector<std::string>& names) {
  Named out{names, std::vector<TensorEntry>(names.size())};
  for (std::size_t i = 0; i < names.size(); ++i) out.entries[i].name = out.names[i];
  return out;
}

// How many leading bytes every name shares, as the header reader counts it.
std::size_t name_prefix(std::span<const TensorEntry> tensors) {
  if (tensors.empty()) return 0;
  std::size_t shared = tensors.front().name.size();
  for (const TensorEntry& t : tensors) shared = shared_prefix(tensors.front().name, t.name, shared);
  return shared;
}

// `tensors` with the keys the header reader makes for `prefix`.
std::vector<TensorEntry> keyed(std::span<const TensorEntry> tensors, std::size_t prefix) {
  std::vector<TensorEntry> out(tensors.begin(), tensors.end());
  for (TensorEntry& t : out) t.key = name_key(t.name, prefix);
  return out;
}

// The name order with the prefix counted in full, as the header reader gives it.
NameOrder in_name_order(std::span<const TensorEntry> tensors) {
  const std::size_t prefix = name_prefix(tensors);
  return order_by_name(keyed(tensors, prefix), prefix);
}

std::vector<std::uint32_t> stable_by_name(std::span<const TensorEntry> tensors) {
  std::vector<std::uint32_t> order(tensors.size());
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
    return tensors[a].name < tensors[b].name;
  });
  return order;
}

// Places in `order` whose name equals the name before, counted the slow way.
std::vector<std::uint32_t> repeats_in(std::span<const TensorEntry> tensors,
                                      const std::vector<std::uint32_t>& order) {
  std::vector<std::uint32_t> repeats;
  for (std::uint32_t i = 1; i < order.size(); ++i) {
    if (tensors[order[i]].name == tensors[order[i - 1]].name) repeats.push_back(i);
  }
  return repeats;
}

// The order and repeats of a stable sort, with the prefix every name shares given in full
// and not at all (any smaller count is also correct).
void expect_like_stable_sort(std::span<const TensorEntry> tensors) {
  const std::vector<std::uint32_t> expected = stable_by_name(tensors);
  for (std::size_t prefix : {name_prefix(tensors), std::size_t{0}}) {
    const NameOrder result = order_by_name(keyed(tensors, prefix), prefix);
    EXPECT_EQ(result.order, expected) << "prefix " << prefix;
    EXPECT_EQ(result.repeats, repeats_in(tensors, expected)) << "prefix " << prefix;
  }
}

// `runs` ascending runs of random layer-style names (some repeated across runs).
std::vector<std::string> runs_of_names(std::size_t runs, std::size_t per_run, unsigned seed) {
  std::mt19937 gen(seed);
  std::vector<std::string> all;
  for (std::size_t r = 0; r < runs; ++r) {
    std::vector<std::string> run;
    for (std::size_t i = 0; i < per_run; ++i) {
      run.push_back("model.layers." + std::to_string(gen() % 500) + ".w" +
                    std::to_string(gen() % 7) + (gen() % 5 == 0 ? "\xC3\xA9" : ""));
    }
    std::sort(run.begin(), run.end());
    all.insert(all.end(), run.begin(), run.end());
  }
  return all;
}

TEST(OrderByName, EmptyAndSingle) {
  EXPECT_TRUE(in_name_order(named({})).order.empty());
  EXPECT_EQ(in_name_order(named({"a"})).order, std::vector<std::uint32_t>{0});
}

TEST(OrderByName, SortedInputKeepsItsOrder) {
  const auto tensors = named({"a", "a.b", "b", "b", "c"});
  EXPECT_EQ(in_name_order(tensors).order, (std::vector<std::uint32_t>{0, 1, 2, 3, 4}));
}

TEST(OrderByName, FewRunsAreMergedLikeAStableSort) {
  for (std::size_t runs : {2u, 3u, 5u, 8u, 64u}) {
    const auto tensors = named(runs_of_names(runs, 300, static_cast<unsigned>(runs)));
    SCOPED_TRACE(std::to_string(runs) + " runs");
    expect_like_stable_sort(tensors);
  }
}

TEST(OrderByName, ManyRunsAreSortedLikeAStableSort) {
  for (std::size_t runs : {65u, 400u}) {
    const auto tensors = named(runs_of_names(runs, 20, static_cast<unsigned>(runs)));
    SCOPED_TRACE(std::to_string(runs) + " runs");
    expect_like_stable_sort(tensors);
    EXPECT_FALSE(in_name_order(tensors).repeats.empty());  // 8,000 names drawn from 3,500
  }
}

TEST(OrderByName, DuplicatesEndUpNextToEachOther) {
  const auto tensors = named({"x", "b", "x", "a", "b"});
  const NameOrder result = in_name_order(tensors);
  EXPECT_EQ(result.order, (std::vector<std::uint32_t>{3, 1, 4, 0, 2}));
  EXPECT_EQ(result.repeats, (std::vector<std::uint32_t>{2, 4}));
}

TEST(OrderByName, BytesAboveAsciiSortAfterAscii) {
  const auto tensors = named({"\xC3\xA9", "z", "a"});
  EXPECT_EQ(in_name_order(tensors).order, (std::vector<std::uint32_t>{2, 1, 0}));
}

TEST(OrderByName, LayerOrderAndLongTiesSortLikeAStableSort) {
  // State-dict order (layer 0, 1, ..., 10, ...), names that agree on more than the 16 bytes
  // after the shared prefix, short names, NUL bytes the zero padding of the keys hides, and
  // bytes above 0x7F early in the name.
  std::vector<std::string> names;
  const char* suffixes[] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                            "self_attn.q_proj.bias", "mlp.up", "x"};
  for (int layer = 0; layer < 4000; ++layer) {  // 20,000 names: the radix-sorted size
    for (const char* suffix : suffixes) {
      names.push_back("model.layers." + std::to_string(layer) + "." + suffix);
    }
  }
  names.push_back("model.layers.1");
  names.push_back(std::string("model.layers.1\0", 15));
  names.push_back(std::string("model.layers.1\0\0", 16));
  names.push_back("model.layers.\xFF\x80");
  names.push_back("model.layers.\x80");
  names.push_back("model.layers.0.self_attn.q_proj.weight");  // a duplicate
  std::mt19937 gen(7);
  std::vector<std::string> shuffled = names;
  std::shuffle(shuffled.begin(), shuffled.end(), gen);
  for (const auto& input : {names, shuffled}) {
    const auto tensors = named(input);
    expect_like_stable_sort(tensors);
    EXPECT_EQ(in_name_order(tensors).repeats.size(), 1u);
  }
}

TEST(NameKey, HoldsSixteenBytesAfterThePrefixBigEndianAndZeroPadded) {
  const NameKey key = name_key("model.layers.12.self_attn", 13);  // "12.self_attn"
  EXPECT_EQ(key.high, 0x31322E73656C665FULL);                     // "12.self_"
  EXPECT_EQ(key.low, 0x6174746E00000000ULL);                      // "attn" and padding
  EXPECT_EQ(name_key("ab", 5).high, 0u);  // a prefix longer than the name leaves nothing
  EXPECT_LT(name_key("a\xC3", 0).high, name_key("a\xC4", 0).high);  // bytes compare unsigned
}

TEST(SharedPrefix, CountsUpToTheFirstDifferenceOrTheLimit) {
  EXPECT_EQ(shared_prefix("model.a", "model.b", 100), 6u);
  EXPECT_EQ(shared_prefix("model.a", "model.b", 3), 3u);
  EXPECT_EQ(shared_prefix("model", "model.b", 100), 5u);
  EXPECT_EQ(shared_prefix("", "x", 100), 0u);
}

}  // namespace
}  // namespace safetensors::detail
