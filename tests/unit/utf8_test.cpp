// The one UTF-8 decoder: every kind of ill-formed sequence is refused, surrogates only when
// asked, and decoded code points encode back to the same bytes.
#include "encoding/utf8.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

namespace safetensors::detail {
namespace {

using namespace std::string_literals;

TEST(Utf8, DecodesEachLength) {
  EXPECT_EQ(decode_utf8("A", 0).code_point, U'A');
  EXPECT_EQ(decode_utf8("A", 0).length, 1u);
  EXPECT_EQ(decode_utf8("\xC3\xA9", 0).code_point, U'\u00E9');
  EXPECT_EQ(decode_utf8("\xC3\xA9", 0).length, 2u);
  EXPECT_EQ(decode_utf8("\xE2\x82\xAC", 0).code_point, U'\u20AC');
  EXPECT_EQ(decode_utf8("\xE2\x82\xAC", 0).length, 3u);
  EXPECT_EQ(decode_utf8("\xF0\x9F\x98\x80", 0).code_point, U'\U0001F600');
  EXPECT_EQ(decode_utf8("\xF0\x9F\x98\x80", 0).length, 4u);
  EXPECT_EQ(decode_utf8("\xF4\x8F\xBF\xBF", 0).code_point, char32_t{0x10FFFF});
  EXPECT_EQ(decode_utf8("x\xC3\xA9", 1).code_point, U'\u00E9');  // from a position
  EXPECT_EQ(decode_utf8("\0"s, 0).length, 1u);                   // NUL is UTF-8
}

TEST(Utf8, RefusesOverlongForms) {
  for (std::string_view overlong : {"\xC0\x80", "\xC1\xBF", "\xE0\x80\x80", "\xE0\x9F\xBF",
                                    "\xF0\x80\x80\x80", "\xF0\x8F\xBF\xBF"}) {
    EXPECT_EQ(decode_utf8(overlong, 0).length, 0u) << testing::PrintToString(overlong);
    EXPECT_FALSE(is_utf8(overlong));
  }
  EXPECT_TRUE(is_utf8("\xE0\xA0\x80"));      // U+0800, the first three-byte character
  EXPECT_TRUE(is_utf8("\xF0\x90\x80\x80"));  // U+10000, the first four-byte one
}

TEST(Utf8, RefusesSurrogatesUnlessAccepted) {
  for (std::string_view surrogate : {"\xED\xA0\x80", "\xED\xBF\xBF"}) {
    EXPECT_FALSE(is_utf8(surrogate));
    EXPECT_TRUE(is_utf8(surrogate, Surrogates::accept));
    EXPECT_EQ(decode_utf8(surrogate, 0, Surrogates::accept).length, 3u);
  }
  EXPECT_EQ(decode_utf8("\xED\xA0\x80", 0, Surrogates::accept).code_point, char32_t{0xD800});
  EXPECT_TRUE(is_utf8("\xED\x9F\xBF"));  // U+D7FF, just below them
  EXPECT_TRUE(is_utf8("\xEE\x80\x80"));  // U+E000, just above
}

TEST(Utf8, RefusesCodePointsAboveTheLast) {
  EXPECT_FALSE(is_utf8("\xF4\x90\x80\x80"));  // U+110000
  EXPECT_FALSE(is_utf8("\xF5\x80\x80\x80", Surrogates::accept));
  EXPECT_FALSE(is_utf8("\xFF"));
}

TEST(Utf8, RefusesTruncatedAndBrokenSequences) {
  for (std::string_view broken : {"\xC3", "\xE2\x82", "\xF0\x9F\x98", "\x80", "\xBF", "\xC3\x41",
                                  "\xE2\x28\xA1", "\xF0\x9F\x98\x41", "ok\xE2\x82"}) {
    EXPECT_FALSE(is_utf8(broken)) << testing::PrintToString(broken);
    EXPECT_FALSE(is_utf8(broken, Surrogates::accept));
  }
  EXPECT_EQ(decode_utf8("\xE2\x82", 0).length, 0u);
  EXPECT_TRUE(is_utf8(""));
  EXPECT_TRUE(is_utf8("plain ascii, model.layers.0.weight"));
}

TEST(Utf8, AppendEncodesEveryLength) {
  for (char32_t code_point : {U'\0', U'A', U'\u00E9', U'\u07FF', U'\u0800', U'\u20AC', U'\uFFFF',
                              U'\U00010000', U'\U0010FFFF'}) {
    std::string encoded;
    append_utf8(encoded, code_point);
    const Utf8Char decoded = decode_utf8(encoded, 0);
    EXPECT_EQ(decoded.code_point, code_point);
    EXPECT_EQ(decoded.length, encoded.size());
  }
  std::string surrogate;
  append_utf8(surrogate, 0xDC00);
  EXPECT_EQ(surrogate, "\xED\xB0\x80");
}

TEST(Utf8, CutPointNeverSplitsACharacter) {
  const std::string_view text = "ab\xE2\x82\xAC";  // "ab€"
  EXPECT_EQ(utf8_cut_point(text, 10), text.size());
  EXPECT_EQ(utf8_cut_point(text, 5), 5u);
  EXPECT_EQ(utf8_cut_point(text, 4), 2u);
  EXPECT_EQ(utf8_cut_point(text, 3), 2u);
  EXPECT_EQ(utf8_cut_point(text, 2), 2u);
  EXPECT_EQ(utf8_cut_point(text, 0), 0u);
  EXPECT_TRUE(is_utf8_continuation('\x80'));
  EXPECT_FALSE(is_utf8_continuation('\xC3'));
  EXPECT_FALSE(is_utf8_continuation('a'));
}

}  // namespace
}  // namespace safetensors::detail
