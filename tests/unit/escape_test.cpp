// JSON strings in their three modes and the control-character escaper, against golden
// strings: the writer's bytes, the CLI's JSON and the index writer's must not change.
#include "encoding/escape.hpp"

#include <gtest/gtest.h>

#include <string>

namespace safetensors::detail {
namespace {

using namespace std::string_literals;

// Every byte class at once: short escapes, other controls, DEL, UTF-8 of each length
// beyond ASCII and one byte that is not UTF-8.
const std::string mixed = "q\"b\\\b\t\n\f\r\x01\x1f\x7f\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xFF"s;

TEST(JsonString, ReferenceModeEscapesOnlyQuotesBackslashesAndControls) {
  EXPECT_EQ(
      json_string(mixed, JsonText::reference),
      "\"q\\\"b\\\\\\b\\t\\n\\f\\r\\u0001\\u001f\x7f\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xFF\"");
  EXPECT_EQ(json_string("\0"s, JsonText::reference), "\"\\u0000\"");
  EXPECT_EQ(json_string("", JsonText::reference), "\"\"");
}

TEST(JsonString, Utf8ModeReplacesBytesThatAreNotUtf8) {
  EXPECT_EQ(json_string(mixed, JsonText::utf8),
            "\"q\\\"b\\\\\\b\\t\\n\\f\\r\\u0001\\u001f\x7f\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"
            "\\ufffd\"");
  // Each byte of a broken sequence is replaced on its own, and what follows is kept.
  EXPECT_EQ(json_string("\xE2\x82z", JsonText::utf8), "\"\\ufffd\\ufffdz\"");
  EXPECT_EQ(json_string("\xED\xA0\x80", JsonText::utf8), "\"\\ufffd\\ufffd\\ufffd\"");
}

TEST(JsonString, AsciiModeWritesWhatPythonJsonDumpsWrites) {
  // json.dumps('q"b\\\b\t\n\f\r\x01\x1f\x7fé€😀') in Python 3.
  EXPECT_EQ(json_string(mixed.substr(0, mixed.size() - 1), JsonText::ascii),
            "\"q\\\"b\\\\\\b\\t\\n\\f\\r\\u0001\\u001f\\u007f\\u00e9\\u20ac\\ud83d\\ude00\"");
  EXPECT_EQ(json_string("\xF4\x8F\xBF\xBF", JsonText::ascii), "\"\\udbff\\udfff\"");
  EXPECT_EQ(json_string("model-00001-of-00002.safetensors", JsonText::ascii),
            "\"model-00001-of-00002.safetensors\"");
  EXPECT_EQ(json_string("\xFF", JsonText::ascii), "\"\\ufffd\"");
}

TEST(JsonString, AppendsAfterWhatIsThere) {
  std::string out = "key=";
  append_json_string(out, "a\nb", JsonText::reference);
  EXPECT_EQ(out, "key=\"a\\nb\"");
}

TEST(EscapeControls, ShowsControlCharactersAndDelAsHex) {
  EXPECT_EQ(escape_controls("a\x1b[2Jb\x7f\n\0"s), "a\\x1b[2Jb\\x7f\\x0a\\x00");
  EXPECT_EQ(escape_controls("caf\xC3\xA9 \"x\" \\ \xFF"), "caf\xC3\xA9 \"x\" \\ \xFF");
  std::string out = "`";
  append_escaped_controls(out, "\t");
  EXPECT_EQ(out, "`\\x09");
}

}  // namespace
}  // namespace safetensors::detail
