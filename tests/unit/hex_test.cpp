// The one hex table: fixed-width digits, 0x numbers with and without padding, and parsing.
#include "encoding/hex.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

namespace safetensors::detail {
namespace {

TEST(Hex, AppendsExactlyTheDigitsAsked) {
  std::string out;
  append_hex(out, 0xff, 4);
  EXPECT_EQ(out, "00ff");
  out.clear();
  append_hex(out, 0xabcd, 2);  // only the low digits
  EXPECT_EQ(out, "cd");
  out.clear();
  append_hex(out, 0, 0);
  EXPECT_EQ(out, "");
}

TEST(Hex, NumbersAreLowercaseAndPaddedOnlyWhenAsked) {
  EXPECT_EQ(hex_number(0), "0x0");
  EXPECT_EQ(hex_number(0x1f), "0x1f");
  EXPECT_EQ(hex_number(0x1f, 8), "0x0000001f");
  EXPECT_EQ(hex_number(0xdeadbeef, 2), "0xdeadbeef");
  EXPECT_EQ(hex_number(0x80, 2), "0x80");
  EXPECT_EQ(hex_number(UINT64_MAX), "0xffffffffffffffff");
  EXPECT_EQ(hex_number(std::uint64_t{1} << 60), "0x1000000000000000");
}

TEST(Hex, DigitValuesOfEitherCase) {
  EXPECT_EQ(hex_digit_value('0'), 0);
  EXPECT_EQ(hex_digit_value('9'), 9);
  EXPECT_EQ(hex_digit_value('a'), 10);
  EXPECT_EQ(hex_digit_value('F'), 15);
  for (char c : {'g', 'G', '/', ':', '@', '`', ' ', '\0'}) EXPECT_EQ(hex_digit_value(c), -1) << c;
}

}  // namespace
}  // namespace safetensors::detail
