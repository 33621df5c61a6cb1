#include "safetensors/header.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "safetensors/error.hpp"
#include "test_files.hpp"

namespace safetensors {
namespace {

using test::file_bytes;

constexpr std::string_view origin = "model.safetensors";

std::vector<std::byte> with_data(std::string_view json, std::uint64_t data_size) {
  std::vector<std::byte> data(data_size, std::byte{0x5A});
  return file_bytes(json, data);
}

// validate_header on a whole file, as parse_file_header takes it.
std::size_t validate_file_bytes(std::span<const std::byte> file) {
  const std::uint64_t length =
      parse_header_length(file.first(std::min<std::size_t>(8, file.size())), file.size(), origin);
  return validate_header(file.subspan(8, length), file.size() - 8 - length, origin);
}

// Every header parsed here is also validated without its result, which must agree.
Header parse(std::string_view json, std::uint64_t data_size = 0) {
  const std::vector<std::byte> file = with_data(json, data_size);
  Header header = parse_file_header(file, origin);
  EXPECT_EQ(validate_file_bytes(file), header.tensors.size()) << json.substr(0, 200);
  return header;
}

// The message validate_header gives for `file`, or "accepted".
std::string validate_verdict(std::span<const std::byte> file) {
  try {
    (void)validate_file_bytes(file);
  } catch (const Error& error) {
    return std::string(error_code_name(error.code())) + ": " + error.what();
  }
  return "accepted";
}

// Checks the code, the origin prefix, that the message is one line, that it contains
// every needle (tensor or key names, values), and that validate_header says the same.
::testing::AssertionResult fails_with(std::span<const std::byte> file, ErrorCode code,
                                      std::initializer_list<std::string_view> needles = {}) {
  try {
    (void)parse_file_header(file, origin);
  } catch (const Error& error) {
    std::string message = error.what();
    const std::string verdict = std::string(error_code_name(error.code())) + ": " + message;
    if (validate_verdict(file) != verdict) {
      return ::testing::AssertionFailure()
             << "parse_header: " << verdict << "\nvalidate_header: " << validate_verdict(file);
    }
    if (error.code() != code) {
      return ::testing::AssertionFailure() << "expected " << error_code_name(code) << ", got "
                                           << error_code_name(error.code()) << ": " << message;
    }
    if (message.rfind(std::string(origin) + ": ", 0) != 0) {
      return ::testing::AssertionFailure() << "message lacks the origin: " << message;
    }
    if (message.find('\n') != std::string::npos) {
      return ::testing::AssertionFailure() << "message spans lines: " << message;
    }
    for (std::string_view needle : needles) {
      if (message.find(needle) == std::string::npos) {
        return ::testing::AssertionFailure() << "message lacks '" << needle << "': " << message;
      }
    }
    return ::testing::AssertionSuccess() << message;
  }
  return ::testing::AssertionFailure() << "accepted";
}

::testing::AssertionResult json_fails(std::string_view json, std::uint64_t data_size,
                                      ErrorCode code,
                                      std::initializer_list<std::string_view> needles = {}) {
  return fails_with(with_data(json, data_size), code, needles);
}

std::string entry(std::string_view name, std::string_view dtype, std::string_view shape,
                  std::uint64_t begin, std::uint64_t end) {
  return "\"" + std::string(name) + "\":{\"dtype\":\"" + std::string(dtype) +
         "\",\"shape\":" + std::string(shape) + ",\"data_offsets\":[" + std::to_string(begin) +
         "," + std::to_string(end) + "]}";
}

// A header object from already-formatted members.
std::string object(std::initializer_list<std::string> members) {
  std::string out = "{";
  for (const std::string& member : members) {
    if (out.size() > 1) out += ",";
    out += member;
  }
  out += "}";
  return out;
}

std::vector<std::byte> prefix_of(std::uint64_t n) {
  std::vector<std::byte> out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>((n >> (8 * i)) & 0xff));
  return out;
}

// ---- Rules 1-3: the length prefix ----

TEST(HeaderLength, FilesShorterThanEightBytesAreTooSmall) {
  for (std::size_t size = 0; size < 8; ++size) {
    std::vector<std::byte> file(size, std::byte{0});
    EXPECT_TRUE(fails_with(file, ErrorCode::header_too_small, {std::to_string(size) + " bytes"}))
        << size;
  }
}

TEST(HeaderLength, ReadsLittleEndian) {
  auto prefix = prefix_of(0x0102);
  EXPECT_EQ(parse_header_length(prefix, 8 + 0x0102, origin), 0x0102u);
  EXPECT_EQ(parse_header_length(prefix_of(0), 8, origin), 0u);
}

TEST(HeaderLength, LimitIsInclusive) {
  EXPECT_EQ(parse_header_length(prefix_of(100'000'000), 8 + 100'000'000, origin), 100'000'000u);
  try {
    (void)parse_header_length(prefix_of(100'000'001), 8 + 200'000'000, origin);
    FAIL() << "accepted";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::header_too_large);
    EXPECT_NE(std::string(error.what()).find("100000001"), std::string::npos) << error.what();
  }
  std::vector<std::byte> huge = prefix_of(std::numeric_limits<std::uint64_t>::max());
  EXPECT_TRUE(fails_with(huge, ErrorCode::header_too_large));
}

TEST(HeaderLength, BeyondEndOfFile) {
  auto file = file_bytes("{}");
  file[0] = std::byte{3};
  EXPECT_TRUE(fails_with(file, ErrorCode::invalid_header_length, {"3", "10 bytes"}));
  try {
    (void)parse_header_length(prefix_of(100), 107, origin);
    FAIL() << "accepted";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::invalid_header_length);
  }
  EXPECT_EQ(parse_header_length(prefix_of(99), 107, origin), 99u);
}

TEST(HeaderLength, PrefixMustHoldEightBytes) {
  std::vector<std::byte> short_prefix(4, std::byte{0});
  try {
    (void)parse_header_length(short_prefix, 100, origin);
    FAIL() << "accepted";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::invalid_argument);
  }
}

TEST(HeaderLength, TooLargeIsCheckedBeforeBeyondFile) {
  std::vector<std::byte> file = prefix_of(100'000'001);
  EXPECT_TRUE(fails_with(file, ErrorCode::header_too_large));
}

// ---- Rule 4: UTF-8 ----

TEST(HeaderEncoding, RejectsInvalidUtf8) {
  const std::vector<std::string> bad = {
      "{\"\xC0\xAF\":{}}",          // overlong '/'
      "{\"a\xE2\x82\":{}}",         // truncated 3-byte sequence
      "{\"\xED\xA0\x80\":{}}",      // UTF-16 surrogate encoded as UTF-8
      "{\"\xF4\x90\x80\x80\":{}}",  // beyond U+10FFFF
      "{\"\x80\":{}}",              // stray continuation byte
      "{}\xFF",                     // in the padding
      // far into an otherwise valid header, past the blocks the parser reads first
      "{\"__metadata__\":{\"k\":\"" + std::string(100000, 'x') + "\xFF\"}}",
  };
  for (const std::string& json : bad) {
    EXPECT_TRUE(json_fails(json, 0, ErrorCode::invalid_header_encoding, {"UTF-8"})) << json;
  }
}

TEST(HeaderEncoding, EncodingIsCheckedBeforeJson) {
  EXPECT_TRUE(json_fails("not json \xFF", 0, ErrorCode::invalid_header_encoding));
}

// ---- Rule 5: shape of the JSON ----

TEST(HeaderJson, RejectsNonJson) {
  for (std::string_view json : {"", "   ", "hello", "{", "{\"a\"", "{\"a\":}", "{,}", "{\"a\":1,}",
                                "{'a':1}", "{\"a\":{\"dtype\":\"F32\" \"shape\":[]}}"}) {
    EXPECT_TRUE(json_fails(json, 0, ErrorCode::invalid_header)) << json;
  }
}

TEST(HeaderJson, TopLevelMustBeAnObject) {
  EXPECT_TRUE(json_fails("[]", 0, ErrorCode::invalid_header, {"array"}));
  EXPECT_TRUE(json_fails("\"x\"", 0, ErrorCode::invalid_header, {"string"}));
  EXPECT_TRUE(json_fails("3", 0, ErrorCode::invalid_header));
  EXPECT_TRUE(json_fails("null", 0, ErrorCode::invalid_header));
}

TEST(HeaderJson, RejectsDataAfterTheObject) {
  for (std::string_view json : {"{} x", "{}{}", "{}}", "{}]", "{} 0", "{} \"\"", "{},"}) {
    EXPECT_TRUE(json_fails(json, 0, ErrorCode::invalid_header)) << json;
  }
}

TEST(HeaderJson, AcceptsSpacePaddingAndLeadingWhitespace) {
  std::string body = "{" + entry("w", "U8", "[2]", 0, 2) + "}";
  EXPECT_EQ(parse(body + "      ", 2).tensors.size(), 1u);
  EXPECT_EQ(parse(" \n\t\r" + body, 2).tensors.size(), 1u);
  EXPECT_EQ(parse(" {}  ", 0).tensors.size(), 0u);
}

TEST(HeaderJson, RejectsByteOrderMark) {
  EXPECT_TRUE(json_fails("\xEF\xBB\xBF{}", 0, ErrorCode::invalid_header));
}

TEST(HeaderJson, RejectsNulPadding) {
  std::string json = "{}";
  json.append(6, '\0');
  EXPECT_TRUE(json_fails(json, 0, ErrorCode::invalid_header));
}

TEST(HeaderJson, RejectsUnescapedControlCharacters) {
  EXPECT_TRUE(
      json_fails("{" + entry("a\tb", "U8", "[1]", 0, 1) + "}", 1, ErrorCode::invalid_header));
}

TEST(HeaderJson, EntryMustBeAnObject) {
  EXPECT_TRUE(json_fails(R"({"w":[1]})", 0, ErrorCode::invalid_header, {"`w`", "array"}));
  EXPECT_TRUE(json_fails(R"({"w":"F32"})", 0, ErrorCode::invalid_header, {"`w`", "string"}));
  EXPECT_TRUE(json_fails(R"({"w":null})", 0, ErrorCode::invalid_header, {"`w`", "null"}));
}

TEST(HeaderJson, MissingFields) {
  EXPECT_TRUE(json_fails(R"({"w":{"shape":[1],"data_offsets":[0,1]}})", 1,
                         ErrorCode::invalid_header, {"`w`", "dtype"}));
  EXPECT_TRUE(json_fails(R"({"w":{"dtype":"U8","data_offsets":[0,1]}})", 1,
                         ErrorCode::invalid_header, {"`w`", "shape"}));
  EXPECT_TRUE(json_fails(R"({"w":{"dtype":"U8","shape":[1]}})", 1, ErrorCode::invalid_header,
                         {"`w`", "data_offsets"}));
  EXPECT_TRUE(json_fails(R"({"w":{}})", 0, ErrorCode::invalid_header, {"`w`", "dtype"}));
}

TEST(HeaderJson, WrongTypedFields) {
  EXPECT_TRUE(json_fails(R"({"w":{"dtype":8,"shape":[1],"data_offsets":[0,1]}})", 1,
                         ErrorCode::invalid_header, {"`w`", "`dtype`", "number"}));
  EXPECT_TRUE(json_fails(R"({"w":{"dtype":"U8","shape":"1","data_offsets":[0,1]}})", 1,
                         ErrorCode::invalid_header, {"`w`", "`shape`", "string"}));
  EXPECT_TRUE(json_fails(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":{"a":0}}})", 1,
                         ErrorCode::invalid_header, {"`w`", "`data_offsets`", "object"}));
  EXPECT_TRUE(json_fails(R"({"w":{"dtype":"U8","shape":[1,"2"],"data_offsets":[0,2]}})", 2,
                         ErrorCode::invalid_header, {"`w`", "`shape`", "element 1", "string"}));
  EXPECT_TRUE(json_fails(R"({"w":{"dtype":"U8","shape":[null],"data_offsets":[0,1]}})", 1,
                         ErrorCode::invalid_header, {"`w`", "`shape`", "null"}));
  EXPECT_TRUE(json_fails(R"({"w":{"dtype":"U8","shape":[[1]],"data_offsets":[0,1]}})", 1,
                         ErrorCode::invalid_header, {"`w`", "`shape`", "array"}));
  EXPECT_TRUE(json_fails(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,true]}})", 1,
                         ErrorCode::invalid_header, {"`w`", "`data_offsets`", "boolean"}));
}

TEST(HeaderJson, UnknownDtype) {
  EXPECT_TRUE(json_fails(R"({"w":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}})", 16,
                         ErrorCode::invalid_header, {"`w`", "unknown dtype `F128`"}));
  EXPECT_TRUE(json_fails(R"({"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", 4,
                         ErrorCode::invalid_header, {"`w`", "`f32`", "case-sensitive"}));
  EXPECT_TRUE(json_fails(R"({"w":{"dtype":"","shape":[1],"data_offsets":[0,4]}})", 4,
                         ErrorCode::invalid_header, {"`w`", "unknown dtype ``"}));
}

TEST(HeaderJson, DtypeIsReadWhereItStandsOrUnescaped) {
  // Plain names, spaced or not, are matched in place; escaped ones take the general path, and
  // so do a name with an escaped quote of its own and one with junk after it.
  const Header escaped =
      parse(R"({"w":{"dtype":"\u0046\u0033\u0032","shape":[1],"data_offsets":[0,4]}})", 4);
  EXPECT_EQ(escaped.tensors.at(0).dtype, Dtype::F32);
  const Header spaced = parse(R"({"w":{"dtype" :  "BF16"  ,"shape":[1],"data_offsets":[0,2]}})", 2);
  EXPECT_EQ(spaced.tensors.at(0).dtype, Dtype::BF16);
  EXPECT_TRUE(json_fails(R"({"w":{"dtype":"F32\"","shape":[1],"data_offsets":[0,4]}})", 4,
                         ErrorCode::invalid_header, {"`w`", "unknown dtype"}));
  EXPECT_TRUE(json_fails(R"({"w":{"dtype":"F32"x,"shape":[1],"data_offsets":[0,4]}})", 4,
                         ErrorCode::invalid_header, {"`w`"}));
}

TEST(HeaderJson, IntegersMustBePlainAndFitU64) {
  struct Case {
    std::string_view value;
    std::string_view why;
  };
  for (const Case& c : {Case{"-1", "negative"}, Case{"-0", "negative"}, Case{"1.0", "integer"},
                        Case{"1.5", "integer"}, Case{"1e2", "integer"}, Case{"1E+2", "integer"},
                        Case{"0e0", "integer"}, Case{"18446744073709551616", "2^64"},
                        Case{"99999999999999999999999999", "2^64"}, Case{"01", "JSON number"},
                        Case{"1x", "JSON number"}, Case{"-", "JSON number"}}) {
    std::string shape =
        R"({"w":{"dtype":"U8","shape":[)" + std::string(c.value) + R"(],"data_offsets":[0,1]}})";
    EXPECT_TRUE(json_fails(shape, 1, ErrorCode::invalid_header, {"`w`", "`shape`", c.value, c.why}))
        << c.value;
    std::string offsets =
        R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,)" + std::string(c.value) + R"(]}})";
    EXPECT_TRUE(json_fails(offsets, 1, ErrorCode::invalid_header, {"`w`", "`data_offsets`"}))
        << c.value;
  }
  // Not a number at all, so only the place is named.
  EXPECT_TRUE(json_fails(R"({"w":{"dtype":"U8","shape":[+1],"data_offsets":[0,1]}})", 1,
                         ErrorCode::invalid_header, {"`w`", "`shape`"}));
}

TEST(HeaderJson, LargestU64IsAcceptedAsAnInteger) {
  // Passes rule 5, then fails on size: proves the values were read exactly.
  EXPECT_TRUE(
      json_fails(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,18446744073709551615]}})", 1,
                 ErrorCode::size_mismatch, {"18446744073709551615"}));
  EXPECT_TRUE(
      json_fails(R"({"w":{"dtype":"U8","shape":[18446744073709551615,0],"data_offsets":[0,1]}})", 1,
                 ErrorCode::size_mismatch, {"[18446744073709551615, 0]"}));
}

TEST(HeaderJson, DataOffsetsNeedExactlyTwoIntegers) {
  EXPECT_TRUE(json_fails(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[1]}})", 1,
                         ErrorCode::invalid_header, {"`w`", "`data_offsets`", "got 1"}));
  EXPECT_TRUE(json_fails(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}})", 1,
                         ErrorCode::invalid_header, {"`w`", "`data_offsets`", "got 3"}));
  EXPECT_TRUE(json_fails(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[]}})", 0,
                         ErrorCode::invalid_header, {"`w`", "`data_offsets`", "got 0"}));
}

TEST(HeaderJson, UnknownFieldsWithNestedValuesAreIgnored) {
  Header header =
      parse(R"({"w":{"extra":{"a":[1,-2.5e-3,{"b":null}],"c":"\u00e9\n","d":true,"e":false},)"
            R"("dtype":"U8","more":[],"shape":[2],"data_offsets":[0,2],"last":{}}})",
            2);
  ASSERT_EQ(header.tensors.size(), 1u);
  EXPECT_EQ(header.tensors[0].shape, std::vector<std::uint64_t>{2});
}

TEST(HeaderJson, MalformedUnknownFieldValuesAreRejected) {
  for (std::string_view extra :
       {"[1,]", "[1 2]", "tru", "nul", "falsey", "01", "1.", "-", ".5", "\"\\x\"", "\"\\ud800\"",
        "{\"a\"}", "{\"a\":1,}", "{1:2}", "[}", "{\"a\":[1,{\"b\":tru}]}", "NaN", "'s'"}) {
    std::string json = R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":)" +
                       std::string(extra) + "}}";
    EXPECT_TRUE(json_fails(json, 1, ErrorCode::invalid_header, {"`w`"})) << extra;
  }
}

TEST(HeaderJson, UnknownFieldNestingIsBounded) {
  auto nested = [](int depth) {
    return R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":)" +
           std::string(depth, '[') + std::string(depth, ']') + "}}";
  };
  EXPECT_EQ(parse(nested(100), 1).tensors.size(), 1u);
  EXPECT_TRUE(json_fails(nested(200), 1, ErrorCode::invalid_header, {"`w`", "nested"}));
  EXPECT_TRUE(json_fails(nested(100000), 1, ErrorCode::invalid_header, {"`w`"}));
}

TEST(HeaderJson, MetadataValuesMustBeStrings) {
  EXPECT_TRUE(json_fails(R"({"__metadata__":{"format":"pt","epoch":3}})", 0,
                         ErrorCode::invalid_header, {"`epoch`", "number"}));
  EXPECT_TRUE(
      json_fails(R"({"__metadata__":{"k":null}})", 0, ErrorCode::invalid_header, {"`k`", "null"}));
  EXPECT_TRUE(json_fails(R"({"__metadata__":{"k":{"a":"b"}}})", 0, ErrorCode::invalid_header,
                         {"`k`", "object"}));
  EXPECT_TRUE(json_fails(R"({"__metadata__":{"k":["a"]}})", 0, ErrorCode::invalid_header,
                         {"`k`", "array"}));
  EXPECT_TRUE(json_fails(R"({"__metadata__":["a"]})", 0, ErrorCode::invalid_header,
                         {"__metadata__", "array"}));
  EXPECT_TRUE(json_fails(R"({"__metadata__":"pt"})", 0, ErrorCode::invalid_header,
                         {"__metadata__", "string"}));
  EXPECT_TRUE(
      json_fails(R"({"__metadata__":{"k":"\ud800"}})", 0, ErrorCode::invalid_header, {"`k`"}));
}

TEST(HeaderJson, MetadataNullMeansAbsent) {
  EXPECT_FALSE(parse(R"({"__metadata__":null})").metadata.has_value());
  EXPECT_FALSE(parse("{}").metadata.has_value());
  Header empty = parse(R"({"__metadata__":{}})");
  ASSERT_TRUE(empty.metadata.has_value());
  EXPECT_TRUE(empty.metadata->empty());
}

TEST(HeaderJson, MetadataIsRead) {
  Header header = parse(R"({"__metadata__":{"format":"pt","z":"","a\u00e9":"x\"y\\"}})");
  ASSERT_TRUE(header.metadata.has_value());
  const Metadata expected = {{"format", "pt"}, {"z", ""}, {"a\xC3\xA9", "x\"y\\"}};
  EXPECT_EQ(*header.metadata, expected);
}

TEST(HeaderJson, LoneSurrogateEscapesAreInvalid) {
  for (std::string_view name : {"\\ud800", "\\udc00", "\\ud800x", "\\ud800\\u0041"}) {
    std::string json = object({entry(name, "U8", "[1]", 0, 1)});
    EXPECT_TRUE(json_fails(json, 1, ErrorCode::invalid_header)) << name;
  }
}

// ---- Rule 5, our additions: NUL characters and the rank limit ----

TEST(HeaderNul, InTensorName) {
  EXPECT_TRUE(json_fails(object({entry("a\\u0000b", "U8", "[1]", 0, 1)}), 1,
                         ErrorCode::nul_character, {"tensor `a\\x00b` contains a null byte"}));
}

TEST(HeaderNul, InMetadataKeyOrValue) {
  EXPECT_TRUE(json_fails(R"({"__metadata__":{"k\u0000":"v"}})", 0, ErrorCode::nul_character,
                         {"__metadata__ key `k\\x00` contains a null byte"}));
  EXPECT_TRUE(json_fails(R"({"__metadata__":{"k":"v\u0000"}})", 0, ErrorCode::nul_character,
                         {"__metadata__ key `k`: the value `v\\x00` contains a null byte"}));
}

TEST(HeaderNul, OtherControlCharactersAndUnknownFieldsAreFine) {
  Header header = parse(R"({"__metadata__":{"k\u0001":"\u001f"},"w\u0002":{"dtype":"U8",)"
                        R"("shape":[1],"data_offsets":[0,1],"extra":"\u0000"}})",
                        1);
  EXPECT_EQ(header.tensors[0].name, "w\x02");
}

TEST(HeaderNul, WinsOverALaterDuplicate) {
  EXPECT_TRUE(json_fails(object({entry("a", "U8", "[1]", 0, 1), entry("a", "U8", "[1]", 1, 2),
                                 entry("\\u0000", "U8", "[1]", 2, 3)}),
                         3, ErrorCode::nul_character));
}

std::string shape_of_rank(std::size_t rank) {
  std::string shape = "[";
  for (std::size_t i = 0; i < rank; ++i) shape += i ? ",1" : "1";
  return shape + "]";
}

TEST(HeaderRank, UpToTheLimitIsAccepted) {
  Header header = parse(object({entry("w", "U8", shape_of_rank(max_rank), 0, 1)}), 1);
  EXPECT_EQ(header.tensors[0].shape.size(), max_rank);
}

TEST(HeaderRank, AboveTheLimitIsRefusedWithTheRank) {
  EXPECT_TRUE(json_fails(object({entry("w", "U8", shape_of_rank(max_rank + 1), 0, 1)}), 1,
                         ErrorCode::too_many_dimensions, {"`w`", "65 dimensions", "64"}));
  // The rank-16,000,000 header of the issue (32 MB) in small: refused, not held.
  EXPECT_TRUE(json_fails(object({entry("w", "U8", shape_of_rank(1'000'000), 0, 1)}), 1,
                         ErrorCode::too_many_dimensions, {"1000000 dimensions"}));
}

TEST(HeaderRank, MalformedElementBeyondTheLimitIsStillInvalid) {
  std::string shape = shape_of_rank(max_rank + 5);
  shape.insert(shape.size() - 1, ",-1");
  EXPECT_TRUE(json_fails(object({entry("w", "U8", shape, 0, 1)}), 1, ErrorCode::invalid_header,
                         {"negative"}));
}

// ---- Rule 6: duplicates ----

TEST(HeaderDuplicates, TensorNames) {
  std::string json =
      "{" + entry("w", "U8", "[1]", 0, 1) + "," + entry("w", "U8", "[1]", 1, 2) + "}";
  EXPECT_TRUE(json_fails(json, 2, ErrorCode::duplicate_key, {"`w`"}));
}

TEST(HeaderDuplicates, TensorNamesAfterUnescaping) {
  std::string json =
      "{" + entry("ab", "U8", "[1]", 0, 1) + "," + entry("\\u0061b", "U8", "[1]", 1, 2) + "}";
  EXPECT_TRUE(json_fails(json, 2, ErrorCode::duplicate_key, {"`ab`"}));
  std::string emoji = "{" + entry("\xF0\x9F\x98\x80", "U8", "[1]", 0, 1) + "," +
                      entry("\\ud83d\\ude00", "U8", "[1]", 1, 2) + "}";
  EXPECT_TRUE(json_fails(emoji, 2, ErrorCode::duplicate_key, {"\xF0\x9F\x98\x80"}));
}

TEST(HeaderDuplicates, FieldInsideAnEntry) {
  EXPECT_TRUE(json_fails(R"({"w":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1,
                         ErrorCode::duplicate_key, {"`w`", "`dtype`"}));
  EXPECT_TRUE(json_fails(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"shape":[1]}})", 1,
                         ErrorCode::duplicate_key, {"`w`", "`shape`"}));
  EXPECT_TRUE(json_fails(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1,"x":2}})", 1,
                         ErrorCode::duplicate_key, {"`w`", "`x`"}));
  EXPECT_TRUE(json_fails(
      R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"d\u0061ta_offsets":[0,1]}})", 1,
      ErrorCode::duplicate_key, {"`w`", "`data_offsets`"}));
}

TEST(HeaderDuplicates, Metadata) {
  EXPECT_TRUE(json_fails(R"({"__metadata__":{"a":"1"},"__metadata__":{"b":"2"}})", 0,
                         ErrorCode::duplicate_key, {"__metadata__"}));
  EXPECT_TRUE(json_fails(R"({"__metadata__":null,"__metadata__":null})", 0,
                         ErrorCode::duplicate_key, {"__metadata__"}));
  EXPECT_TRUE(
      json_fails(R"({"__metadata__":{"k":"1","k":"2"}})", 0, ErrorCode::duplicate_key, {"`k`"}));
  EXPECT_TRUE(json_fails(R"({"__metadata__":{"k":"1","\u006b":"2"}})", 0, ErrorCode::duplicate_key,
                         {"`k`"}));
}

TEST(HeaderDuplicates, KeysInsideUnknownValues) {
  EXPECT_TRUE(
      json_fails(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":{"k":1,"k":2}}})", 1,
                 ErrorCode::duplicate_key, {"`w`", "`k`"}));
}

TEST(HeaderDuplicates, ReportsTheFirstInHeaderOrder) {
  std::string json = R"({"__metadata__":{"m":"1","m":"2"},)" + entry("b", "U8", "[1]", 0, 1) + "," +
                     entry("a", "U8", "[1]", 1, 2) + "," + entry("a", "U8", "[1]", 2, 3) + "}";
  EXPECT_TRUE(json_fails(json, 3, ErrorCode::duplicate_key, {"`m`"}));
  std::string names = "{" + entry("b", "U8", "[1]", 0, 1) + "," + entry("a", "U8", "[1]", 1, 2) +
                      "," + entry("b", "U8", "[1]", 2, 3) + "," + entry("a", "U8", "[1]", 3, 4) +
                      "}";
  EXPECT_TRUE(json_fails(names, 4, ErrorCode::duplicate_key, {"`b`"}));
}

// The prefix every name shares is counted as the names are read; a last name that shares
// less of it (lm_head after the layers, as in state dicts) must still sort into place.
TEST(HeaderNames, NameOrderWhenTheLastNameSharesLessOfThePrefix) {
  for (const char* last : {"lm_head.weight", "model.embed", "model.layers", ""}) {
    std::vector<std::string> names;
    for (int i = 0; i < 100; ++i) {  // 100 runs: sorted, not merged
      for (const char* suffix : {"q", "k", "v"}) {
        names.push_back("model.layers." + std::to_string(i) + "." + suffix);
      }
    }
    names.push_back(last);
    std::string json = "{";
    for (std::size_t i = 0; i < names.size(); ++i) {
      if (i > 0) json += ",";
      json += entry(names[i], "U8", "[1]", i, i + 1);
    }
    json += "}";
    const Header header = parse(json, names.size());
    std::vector<std::string> in_name_order;
    for (std::size_t i : header.name_order) in_name_order.push_back(header.tensors[i].name);
    std::sort(names.begin(), names.end());
    EXPECT_EQ(in_name_order, names) << "last name `" << last << "`";
  }
}

// Names in layer order (q, k, v of layer 0, then of layer 1, ...) are more runs than are merged,
// so they are sorted: by comparison below 16,384 names, by radix above. Either way the repeat
// that comes first in the header is the one reported.
TEST(HeaderDuplicates, ReportsTheFirstAmongManyNamesInLayerOrder) {
  for (int layers : {70, 7000}) {
    std::vector<std::string> names;
    for (int i = 0; i < layers; ++i) {
      for (const char* suffix : {"q", "k", "v"}) {
        names.push_back("model.layers." + std::to_string(i) + "." + suffix);
      }
    }
    const std::size_t count = names.size();
    names[count * 3 / 4] = names[7];  // repeated first in header order
    names[count - 1] = names[12];
    std::string json = "{";
    for (std::size_t i = 0; i < count; ++i) {
      if (i > 0) json += ",";
      json += entry(names[i], "U8", "[1]", i, i + 1);
    }
    json += "}";
    EXPECT_TRUE(
        json_fails(json, count, ErrorCode::duplicate_key, {"`" + names[7] + "` appears twice"}))
        << count << " names";
  }
}

TEST(HeaderRuleOrder, InvalidHeaderWinsOverDuplicate) {
  std::string json = "{" + entry("w", "U8", "[1]", 0, 1) + "," + entry("w", "U8", "[1]", 1, 2) +
                     "," + entry("v", "X9", "[1]", 2, 3) + "}";
  EXPECT_TRUE(json_fails(json, 3, ErrorCode::invalid_header, {"`v`", "X9"}));
  EXPECT_TRUE(json_fails(R"({"__metadata__":{},"__metadata__":{"k":1}})", 0,
                         ErrorCode::invalid_header, {"`k`"}));
}

TEST(HeaderRuleOrder, DuplicateWinsOverOffsets) {
  std::string json =
      "{" + entry("w", "U8", "[1]", 5, 6) + "," + entry("w", "U8", "[1]", 0, 1) + "}";
  EXPECT_TRUE(json_fails(json, 9, ErrorCode::duplicate_key, {"`w`"}));
}

TEST(HeaderRuleOrder, OffsetsWinOverSize) {
  // Both a leading gap and a size mismatch in the same tensor.
  EXPECT_TRUE(json_fails("{" + entry("w", "F32", "[2]", 4, 7) + "}", 7, ErrorCode::invalid_offsets,
                         {"`w`"}));
  // A hole and a size mismatch.
  std::string json =
      "{" + entry("a", "U8", "[1]", 0, 1) + "," + entry("b", "F32", "[2]", 2, 3) + "}";
  EXPECT_TRUE(json_fails(json, 3, ErrorCode::invalid_offsets, {"`b`"}));
}

TEST(HeaderRuleOrder, FirstFailingTensorInDataOrderIsReported) {
  std::string json =
      "{" + entry("late", "U8", "[1]", 4, 6) + "," + entry("early", "F32", "[2]", 0, 4) + "}";
  EXPECT_TRUE(json_fails(json, 6, ErrorCode::size_mismatch, {"`early`"}));
}

// ---- Rules 7-10 ----

TEST(HeaderOffsets, Hole) {
  std::string json = "{" + entry("a", "U8", "[4]", 0, 4) + "," +
                     entry("h.3.attn.weight", "U8", "[4]", 20, 24) + "}";
  EXPECT_TRUE(json_fails(json, 24, ErrorCode::invalid_offsets,
                         {"tensor `h.3.attn.weight`", "[20, 24)", "16 bytes", "`a`", "hole"}));
}

TEST(HeaderOffsets, Overlap) {
  std::string json =
      "{" + entry("x", "U8", "[8]", 0, 8) + "," + entry("y", "U8", "[4]", 4, 8) + "}";
  EXPECT_TRUE(json_fails(json, 8, ErrorCode::invalid_offsets, {"`y`", "overlaps", "`x`", "8"}));
  std::string same =
      "{" + entry("x", "U8", "[8]", 0, 8) + "," + entry("y", "U8", "[8]", 0, 8) + "}";
  EXPECT_TRUE(json_fails(same, 8, ErrorCode::invalid_offsets, {"`y`", "overlaps", "`x`"}));
}

TEST(HeaderOffsets, LeadingGap) {
  EXPECT_TRUE(json_fails("{" + entry("w", "U8", "[4]", 4, 8) + "}", 8, ErrorCode::invalid_offsets,
                         {"`w`", "does not start at 0"}));
}

TEST(HeaderOffsets, EndBeforeBegin) {
  std::string json =
      "{" + entry("a", "U8", "[4]", 0, 4) + "," + entry("b", "U8", "[0]", 4, 2) + "}";
  EXPECT_TRUE(json_fails(json, 4, ErrorCode::invalid_offsets, {"`b`", "[4, 2)"}));
}

TEST(HeaderSize, OverflowInShapeProduct) {
  EXPECT_TRUE(json_fails("{" + entry("w", "U8", "[4294967296,4294967296]", 0, 0) + "}", 0,
                         ErrorCode::overflow, {"`w`"}));
}

TEST(HeaderSize, OverflowInBits) {
  // 2^61 elements of 64 bits.
  EXPECT_TRUE(json_fails("{" + entry("w", "F64", "[2305843009213693952]", 0, 0) + "}", 0,
                         ErrorCode::overflow, {"`w`", "F64"}));
}

TEST(HeaderSize, MisalignedSubByteTypes) {
  EXPECT_TRUE(json_fails("{" + entry("w", "F4", "[3]", 0, 2) + "}", 2, ErrorCode::misaligned,
                         {"`w`", "F4", "[3]"}));
  EXPECT_TRUE(json_fails("{" + entry("w", "F6_E2M3", "[2]", 0, 2) + "}", 2, ErrorCode::misaligned,
                         {"`w`", "F6_E2M3"}));
  EXPECT_TRUE(json_fails("{" + entry("w", "F6_E3M2", "[1,5]", 0, 4) + "}", 4, ErrorCode::misaligned,
                         {"`w`", "F6_E3M2"}));
  EXPECT_EQ(parse("{" + entry("w", "F4", "[3,2]", 0, 3) + "}", 3).tensors.size(), 1u);
  EXPECT_EQ(parse("{" + entry("w", "F6_E2M3", "[4]", 0, 3) + "}", 3).tensors.size(), 1u);
  EXPECT_EQ(parse("{" + entry("w", "F6_E3M2", "[0,3]", 0, 0) + "}", 0).tensors.size(), 1u);
}

TEST(HeaderSize, SizeMismatchShowsExpectedAndActual) {
  EXPECT_TRUE(json_fails("{" + entry("w", "F32", "[2]", 0, 7) + "}", 7, ErrorCode::size_mismatch,
                         {"`w`", "needs 8 bytes", "hold 7"}));
  EXPECT_TRUE(json_fails("{" + entry("w", "BF16", "[]", 0, 4) + "}", 4, ErrorCode::size_mismatch,
                         {"`w`", "needs 2 bytes", "hold 4"}));
}

// ---- Rule 11 ----

TEST(HeaderBuffer, TrailingBytes) {
  EXPECT_TRUE(json_fails("{" + entry("w", "U8", "[4]", 0, 4) + "}", 10,
                         ErrorCode::buffer_size_mismatch, {"6 trailing bytes", "`w`"}));
  EXPECT_TRUE(json_fails("{}", 1, ErrorCode::buffer_size_mismatch, {"1 bytes"}));
}

TEST(HeaderBuffer, Truncated) {
  EXPECT_TRUE(json_fails("{" + entry("w", "U8", "[4]", 0, 4) + "}", 1,
                         ErrorCode::buffer_size_mismatch, {"3 bytes short", "`w`", "truncated"}));
}

TEST(HeaderBuffer, ParseHeaderTakesTheDataSize) {
  std::string json = "{" + entry("w", "U8", "[4]", 0, 4) + "}";
  auto bytes = std::as_bytes(std::span(json.data(), json.size()));
  Header header = parse_header(bytes, 4, origin);
  EXPECT_EQ(header.data_start, 8 + json.size());
  EXPECT_EQ(header.data_size, 4u);
  try {
    (void)parse_header(bytes, 5, origin);
    FAIL() << "accepted";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::buffer_size_mismatch);
  }
}

// ---- Accepted files ----

TEST(HeaderAccept, EmptyHeaderWithEmptyData) {
  Header header = parse("{}");
  EXPECT_TRUE(header.tensors.empty());
  EXPECT_TRUE(header.name_order.empty());
  EXPECT_EQ(header.data_start, 10u);
  EXPECT_EQ(header.data_size, 0u);
}

TEST(HeaderAccept, EmptyTensorsShareAnOffset) {
  std::string json = "{" + entry("e2", "F32", "[0]", 4, 4) + "," + entry("a", "U8", "[4]", 0, 4) +
                     "," + entry("e1", "F32", "[3,0]", 4, 4) + "," + entry("z", "U8", "[2]", 4, 6) +
                     "," + entry("e0", "F32", "[0]", 6, 6) + "}";
  Header header = parse(json, 6);
  ASSERT_EQ(header.tensors.size(), 5u);
  std::vector<std::string> names;
  for (const TensorInfo& t : header.tensors) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"a", "e1", "e2", "z", "e0"}));
  EXPECT_EQ(header.tensors[1].byte_count(), 0u);
  EXPECT_EQ(header.tensors[1].element_count(), 0u);
}

TEST(HeaderAccept, ScalarTensor) {
  Header header = parse("{" + entry("s", "F64", "[]", 0, 8) + "}", 8);
  ASSERT_EQ(header.tensors.size(), 1u);
  EXPECT_TRUE(header.tensors[0].shape.empty());
  EXPECT_EQ(header.tensors[0].element_count(), 1u);
  EXPECT_EQ(header.tensors[0].byte_count(), 8u);
}

TEST(HeaderAccept, FillsTheHeader) {
  std::string json = R"({"__metadata__":{"format":"pt"},)" + entry("b", "F32", "[2,3]", 0, 24) +
                     "," + entry("c", "BF16", "[4]", 32, 40) + "," +
                     entry("a", "I64", "[1]", 24, 32) + "}";
  Header header = parse(json + "   ", 40);
  ASSERT_EQ(header.tensors.size(), 3u);
  EXPECT_EQ(header.tensors[0].name, "b");
  EXPECT_EQ(header.tensors[0].dtype, Dtype::F32);
  EXPECT_EQ(header.tensors[0].shape, (std::vector<std::uint64_t>{2, 3}));
  EXPECT_EQ(header.tensors[0].data_begin, 0u);
  EXPECT_EQ(header.tensors[0].data_end, 24u);
  EXPECT_EQ(header.tensors[0].element_count(), 6u);
  EXPECT_EQ(header.tensors[1].name, "a");
  EXPECT_EQ(header.tensors[1].dtype, Dtype::I64);
  EXPECT_EQ(header.tensors[2].name, "c");
  EXPECT_EQ(header.tensors[2].dtype, Dtype::BF16);
  EXPECT_EQ(header.name_order, (std::vector<std::size_t>{1, 0, 2}));
  ASSERT_TRUE(header.metadata.has_value());
  EXPECT_EQ(header.metadata->at("format"), "pt");
  EXPECT_EQ(header.data_start, 8 + json.size() + 3);
  EXPECT_EQ(header.data_size, 40u);
}

TEST(HeaderAccept, NameOrderIsBytewise) {
  std::string json = "{" + entry("\xC3\xA9", "U8", "[1]", 0, 1) + "," +
                     entry("Z", "U8", "[1]", 1, 2) + "," + entry("a", "U8", "[1]", 2, 3) + "," +
                     entry("", "U8", "[1]", 3, 4) + "}";
  Header header = parse(json, 4);
  std::vector<std::string> sorted;
  for (std::size_t index : header.name_order) sorted.push_back(header.tensors[index].name);
  EXPECT_EQ(sorted, (std::vector<std::string>{"", "Z", "a", "\xC3\xA9"}));
}

TEST(HeaderAccept, UnusualNames) {
  std::string json = "{" + entry("", "U8", "[1]", 0, 1) + "," +
                     entry("\xE5\x90\x8D\xE5\x89\x8D", "U8", "[1]", 1, 2) + "," +
                     entry("a\\nb\\\"c\\\\", "U8", "[1]", 2, 3) + "," +
                     entry("\\ud83d\\ude00\\u00e9", "U8", "[1]", 3, 4) + "," +
                     entry("__metadata__x", "U8", "[1]", 4, 5) + "}";
  Header header = parse(json, 5);
  ASSERT_EQ(header.tensors.size(), 5u);
  EXPECT_EQ(header.tensors[0].name, "");
  EXPECT_EQ(header.tensors[1].name, "\xE5\x90\x8D\xE5\x89\x8D");
  EXPECT_EQ(header.tensors[2].name, "a\nb\"c\\");
  EXPECT_EQ(header.tensors[3].name, "\xF0\x9F\x98\x80\xC3\xA9");
  EXPECT_EQ(header.tensors[4].name, "__metadata__x");
}

TEST(HeaderAccept, EscapedMetadataKeyIsMetadata) {
  Header header = parse(R"({"\u005f_metadata__":{"k":"v"}})");
  ASSERT_TRUE(header.metadata.has_value());
  EXPECT_EQ(header.metadata->at("k"), "v");
}

TEST(HeaderAccept, WhitespaceInsideTheJson) {
  Header header = parse(
      "{ \"w\" : { \"dtype\" : \"U8\" , \"shape\" : [ 2 ] , \"data_offsets\" : [ 0 , 2 ] } }", 2);
  ASSERT_EQ(header.tensors.size(), 1u);
  EXPECT_EQ(header.tensors[0].data_end, 2u);
}

// ---- Messages ----

TEST(HeaderMessages, ControlBytesInNamesAreEscaped) {
  std::string json = "{" + entry("a\\u0001b\\nc", "U8", "[2]", 0, 1) + "}";
  EXPECT_TRUE(json_fails(json, 1, ErrorCode::size_mismatch, {"`a\\x01b\\x0ac`"}));
}

TEST(HeaderMessages, LongNamesAreShortened) {
  std::string name(5000, 'n');
  std::string json = "{" + entry(name, "U8", "[2]", 0, 1) + "}";
  try {
    parse(json, 1);
    FAIL() << "accepted";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::size_mismatch);
    EXPECT_LT(std::string(error.what()).size(), 1000u);
    EXPECT_NE(std::string(error.what()).find("5000 bytes"), std::string::npos) << error.what();
  }
}

TEST(HeaderMessages, ManyTensors) {
  std::string json = "{";
  const int count = 5000;
  for (int i = 0; i < count; ++i) {
    if (i > 0) json += ",";
    std::string name = std::to_string(count - 1 - i);
    json += entry(name.insert(0, 1, 't'), "U16", "[3]", 6 * i, 6 * i + 6);
  }
  json += "}";
  Header header = parse(json, 6 * count);
  ASSERT_EQ(header.tensors.size(), static_cast<std::size_t>(count));
  EXPECT_EQ(header.tensors.front().name, "t4999");
  EXPECT_EQ(header.tensors[header.name_order.front()].name, "t0");
  for (std::size_t i = 1; i < header.name_order.size(); ++i) {
    EXPECT_LT(header.tensors[header.name_order[i - 1]].name,
              header.tensors[header.name_order[i]].name);
  }
}

}  // namespace
}  // namespace safetensors
