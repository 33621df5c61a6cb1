#include "safetensors/dtype.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <vector>

namespace safetensors {
namespace {

constexpr std::uint64_t u64_max = std::numeric_limits<std::uint64_t>::max();

TEST(Dtype, AllDtypesListsEveryEnumeratorOnce) {
  auto all = all_dtypes();
  ASSERT_EQ(all.size(), dtype_count);
  for (std::size_t i = 0; i < all.size(); ++i) EXPECT_EQ(static_cast<std::size_t>(all[i]), i);
}

TEST(Dtype, NamesRoundTrip) {
  std::set<std::string_view> names;
  for (Dtype dtype : all_dtypes()) {
    std::string_view name = dtype_name(dtype);
    EXPECT_TRUE(names.insert(name).second) << name;
    ASSERT_TRUE(dtype_from_name(name).has_value()) << name;
    EXPECT_EQ(*dtype_from_name(name), dtype) << name;
  }
}

TEST(Dtype, NamesAreCaseSensitiveAndExact) {
  EXPECT_FALSE(dtype_from_name("f32"));
  EXPECT_FALSE(dtype_from_name("Bf16"));
  EXPECT_FALSE(dtype_from_name("bool"));
  EXPECT_FALSE(dtype_from_name("F32 "));
  EXPECT_FALSE(dtype_from_name(""));
  EXPECT_FALSE(dtype_from_name("F128"));
  EXPECT_FALSE(dtype_from_name(std::string_view("F32\0", 4)));
  EXPECT_EQ(dtype_from_name("F8_E4M3FNUZ"), Dtype::F8_E4M3FNUZ);
  EXPECT_EQ(dtype_from_name("F6_E2M3"), Dtype::F6_E2M3);
}

TEST(Dtype, BitsMatchFormat) {
  const std::vector<std::pair<std::string_view, unsigned>> expected = {
      {"BOOL", 8},    {"U8", 8},          {"I8", 8},          {"F8_E5M2", 8}, {"F8_E4M3", 8},
      {"F8_E8M0", 8}, {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8}, {"I16", 16},    {"U16", 16},
      {"F16", 16},    {"BF16", 16},       {"I32", 32},        {"U32", 32},    {"F32", 32},
      {"I64", 64},    {"U64", 64},        {"F64", 64},        {"C64", 64},    {"F4", 4},
      {"F6_E2M3", 6}, {"F6_E3M2", 6},
  };
  ASSERT_EQ(expected.size(), dtype_count);
  for (const auto& [name, bits] : expected) {
    auto dtype = dtype_from_name(name);
    ASSERT_TRUE(dtype) << name;
    EXPECT_EQ(dtype_bits(*dtype), bits) << name;
  }
}

TEST(Dtype, WriteRankFollowsFormatOrder) {
  const std::vector<std::string_view> order = {
      "U64", "I64", "F64",     "C64",         "F32",         "U32",     "I32",     "BF16",
      "F16", "U16", "I16",     "F8_E5M2FNUZ", "F8_E4M3FNUZ", "F8_E8M0", "F8_E4M3", "F8_E5M2",
      "I8",  "U8",  "F6_E3M2", "F6_E2M3",     "F4",          "BOOL",
  };
  ASSERT_EQ(order.size(), dtype_count);
  for (std::size_t rank = 0; rank < order.size(); ++rank) {
    auto dtype = dtype_from_name(order[rank]);
    ASSERT_TRUE(dtype) << order[rank];
    EXPECT_EQ(dtype_write_rank(*dtype), rank) << order[rank];
  }
}

TEST(Dtype, ByteSizeOfOrdinaryShapes) {
  const std::vector<std::uint64_t> shape = {2, 3};
  EXPECT_EQ(byte_size(Dtype::F32, shape).bytes, 24u);
  EXPECT_EQ(byte_size(Dtype::BF16, shape).bytes, 12u);
  EXPECT_EQ(byte_size(Dtype::BOOL, shape).bytes, 6u);
  EXPECT_EQ(byte_size(Dtype::C64, shape).bytes, 48u);
  EXPECT_TRUE(byte_size(Dtype::F32, shape));
}

TEST(Dtype, ByteSizeOfScalarAndEmpty) {
  EXPECT_EQ(byte_size(Dtype::F64, {}).bytes, 8u);
  const std::vector<std::uint64_t> empty = {4, 0, 7};
  ByteSize size = byte_size(Dtype::F64, empty);
  EXPECT_TRUE(size);
  EXPECT_EQ(size.bytes, 0u);
  // A zero dimension makes even a huge product fine.
  const std::vector<std::uint64_t> zero_then_huge = {0, u64_max, u64_max};
  EXPECT_EQ(byte_size(Dtype::F64, zero_then_huge).problem, SizeProblem::none);
}

TEST(Dtype, ByteSizeOverflow) {
  const std::vector<std::uint64_t> elements = {std::uint64_t{1} << 32, std::uint64_t{1} << 32};
  EXPECT_EQ(byte_size(Dtype::U8, elements).problem, SizeProblem::overflow);
  // 2^61 elements fit, 2^61 * 64 bits do not.
  const std::vector<std::uint64_t> bits = {std::uint64_t{1} << 61};
  EXPECT_EQ(byte_size(Dtype::F64, bits).problem, SizeProblem::overflow);
  EXPECT_FALSE(byte_size(Dtype::F64, bits));
  // 2^60 * 8 bits = 2^63 still fits.
  const std::vector<std::uint64_t> fits = {std::uint64_t{1} << 60};
  EXPECT_EQ(byte_size(Dtype::U8, fits).bytes, std::uint64_t{1} << 60);
}

TEST(Dtype, ByteSizeMisalignedSubByte) {
  const std::vector<std::uint64_t> odd = {3};
  const std::vector<std::uint64_t> even = {2};
  const std::vector<std::uint64_t> four = {4};
  EXPECT_EQ(byte_size(Dtype::F4, odd).problem, SizeProblem::misaligned);
  EXPECT_EQ(byte_size(Dtype::F4, even).bytes, 1u);
  EXPECT_EQ(byte_size(Dtype::F6_E2M3, odd).problem, SizeProblem::misaligned);
  EXPECT_EQ(byte_size(Dtype::F6_E3M2, even).problem, SizeProblem::misaligned);
  EXPECT_EQ(byte_size(Dtype::F6_E3M2, four).bytes, 3u);
  EXPECT_EQ(byte_size(Dtype::F6_E2M3, four).bytes, 3u);
}

TEST(Dtype, ElementCount) {
  const std::vector<std::uint64_t> shape = {2, 3, 4};
  EXPECT_EQ(element_count(shape), 24u);
  EXPECT_EQ(element_count({}), 1u);
  const std::vector<std::uint64_t> huge = {u64_max, 2};
  EXPECT_FALSE(element_count(huge));
  const std::vector<std::uint64_t> max = {u64_max, 1};
  EXPECT_EQ(element_count(max), u64_max);
}

}  // namespace
}  // namespace safetensors
