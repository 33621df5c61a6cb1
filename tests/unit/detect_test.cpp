// detect_format: the first bytes that make a zip, a .npy or a pickle, and what is none of
// them (including inputs too short to tell).
#include "convert/detect.hpp"

#include <gtest/gtest.h>

#include <string_view>
#include <vector>

#include "safetensors/source.hpp"

namespace safetensors::detail {
namespace {

std::vector<std::byte> bytes_of(std::string_view text) {
  std::vector<std::byte> out;
  for (const char c : text) out.push_back(static_cast<std::byte>(c));
  return out;
}

InputFormat detect(std::string_view text) {
  return detect_format(bytes_of(text));
}

// The span and the Source overloads agree, and a source never has to be longer than its
// magic number.
InputFormat detect_source(std::string_view text) {
  const std::vector<std::byte> bytes = bytes_of(text);
  const auto source = make_memory_source(bytes, "input");
  return detect_format(*source);
}

using namespace std::string_view_literals;

TEST(DetectFormat, Zip) {
  EXPECT_EQ(detect("PK\x03\x04\x14\x00\x00\x00"sv), InputFormat::zip);
  EXPECT_EQ(detect_source("PK\x03\x04"sv), InputFormat::zip);
}

TEST(DetectFormat, Npy) {
  EXPECT_EQ(detect("\x93NUMPY\x01\x00v\x00{'descr'"sv), InputFormat::npy);
  EXPECT_EQ(detect_source("\x93NUMPY"sv), InputFormat::npy);
}

TEST(DetectFormat, Pickles) {
  EXPECT_EQ(detect("\x80\x02}q\x00."sv), InputFormat::pickle);           // protocol 2
  EXPECT_EQ(detect("\x80\x05\x95\x00\x00\x00"sv), InputFormat::pickle);  // protocol 5
  EXPECT_EQ(detect("(dp0\n."sv), InputFormat::pickle);                   // protocol 0: MARK
  EXPECT_EQ(detect("}."sv), InputFormat::pickle);                        // protocol 1
  // A legacy torch.save file starts with a pickle of its magic number (LONG1).
  EXPECT_EQ(detect_source("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8"sv),
            InputFormat::pickle);
}

TEST(DetectFormat, Unknown) {
  EXPECT_EQ(detect("\x80\x06}."sv), InputFormat::unknown);  // no protocol 6
  EXPECT_EQ(detect("hello, world"sv), InputFormat::unknown);
  EXPECT_EQ(detect("PK\x05\x06"sv), InputFormat::unknown);  // an end record, no entry first
  // A safetensors file: an 8-byte little-endian header length, then JSON.
  EXPECT_EQ(detect_source("\x40\x00\x00\x00\x00\x00\x00\x00{\"a\":"sv), InputFormat::unknown);
}

TEST(DetectFormat, TooShortToTell) {
  EXPECT_EQ(detect(""sv), InputFormat::unknown);
  EXPECT_EQ(detect_source(""sv), InputFormat::unknown);
  EXPECT_EQ(detect_source("PK\x03"sv), InputFormat::unknown);
  EXPECT_EQ(detect_source("\x93NUMP"sv), InputFormat::unknown);
  EXPECT_EQ(detect_source("\x80"sv), InputFormat::unknown);  // PROTO without its protocol
}

}  // namespace
}  // namespace safetensors::detail
