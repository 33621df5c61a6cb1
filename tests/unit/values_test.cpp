#include "safetensors/values.hpp"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "safetensors/error.hpp"

namespace safetensors {
namespace {

// The reference value of a code of a sign/exponent/mantissa format, computed from the format
// definition in double arithmetic with pow (the library uses integer significands and ldexp).
struct Layout {
  int e_bits;
  int m_bits;
  int bias;
};

double reference_value(Layout f, unsigned code) {
  const unsigned m = code % (1u << f.m_bits);
  const unsigned e = (code / (1u << f.m_bits)) % (1u << f.e_bits);
  const bool negative = (code / (1u << (f.m_bits + f.e_bits))) % 2 == 1;
  const double fraction = static_cast<double>(m) / std::pow(2.0, f.m_bits);
  const double value = e == 0 ? fraction * std::pow(2.0, 1 - f.bias)
                              : (1.0 + fraction) * std::pow(2.0, static_cast<int>(e) - f.bias);
  return negative ? -value : value;
}

// Exact equality that also tells +0 from -0.
void expect_same(double expected, float actual, unsigned code) {
  EXPECT_EQ(static_cast<double>(actual), expected) << "code 0x" << std::hex << code;
  EXPECT_EQ(std::signbit(actual), std::signbit(expected)) << "code 0x" << std::hex << code;
}

std::vector<std::byte> bytes_of(std::initializer_list<unsigned> values) {
  std::vector<std::byte> out;
  for (unsigned v : values) out.push_back(static_cast<std::byte>(v));
  return out;
}

template <typename T>
std::vector<std::byte> raw(std::initializer_list<T> values) {
  std::vector<std::byte> out(values.size() * sizeof(T));
  std::memcpy(out.data(), std::data(values), out.size());
  return out;
}

TEST(F8, E4M3IsExhaustivelyCorrect) {
  for (unsigned code = 0; code < 256; ++code) {
    const float v = f8_to_float(Dtype::F8_E4M3, static_cast<std::uint8_t>(code));
    if ((code & 0x7F) == 0x7F) {
      EXPECT_TRUE(std::isnan(v)) << code;
    } else {
      expect_same(reference_value({4, 3, 7}, code), v, code);
    }
  }
  EXPECT_EQ(f8_to_float(Dtype::F8_E4M3, 0x7E), 448.0f);
  EXPECT_EQ(f8_to_float(Dtype::F8_E4M3, 0xFE), -448.0f);
  EXPECT_EQ(f8_to_float(Dtype::F8_E4M3, 0x01), 0x1p-9f);
  EXPECT_EQ(f8_to_float(Dtype::F8_E4M3, 0x78), 256.0f);  // all-ones exponent is finite
}

TEST(F8, E5M2IsExhaustivelyCorrect) {
  for (unsigned code = 0; code < 256; ++code) {
    const float v = f8_to_float(Dtype::F8_E5M2, static_cast<std::uint8_t>(code));
    const unsigned exponent = (code >> 2) & 0x1F;
    if (exponent == 0x1F && (code & 3) != 0) {
      EXPECT_TRUE(std::isnan(v)) << code;
    } else if (exponent == 0x1F) {
      EXPECT_TRUE(std::isinf(v)) << code;
      EXPECT_EQ(v < 0, code >= 0x80) << code;
    } else {
      expect_same(reference_value({5, 2, 15}, code), v, code);
    }
  }
  EXPECT_EQ(f8_to_float(Dtype::F8_E5M2, 0x7B), 57344.0f);
  EXPECT_EQ(f8_to_float(Dtype::F8_E5M2, 0x01), 0x1p-16f);
}

TEST(F8, FnuzFormatsHaveOneNanAndNoNegativeZero) {
  struct Case {
    Dtype dtype;
    Layout layout;
  };
  for (Case c : {Case{Dtype::F8_E4M3FNUZ, {4, 3, 8}}, Case{Dtype::F8_E5M2FNUZ, {5, 2, 16}}}) {
    for (unsigned code = 0; code < 256; ++code) {
      const float v = f8_to_float(c.dtype, static_cast<std::uint8_t>(code));
      if (code == 0x80) {
        EXPECT_TRUE(std::isnan(v));
      } else {
        EXPECT_FALSE(std::isnan(v) || std::isinf(v)) << code;
        expect_same(reference_value(c.layout, code), v, code);
      }
    }
  }
  EXPECT_EQ(f8_to_float(Dtype::F8_E4M3FNUZ, 0x7F), 240.0f);
  EXPECT_EQ(f8_to_float(Dtype::F8_E5M2FNUZ, 0x7F), 57344.0f);
  EXPECT_EQ(f8_to_float(Dtype::F8_E4M3FNUZ, 0x00), 0.0f);
}

TEST(F8, E8M0IsAPowerOfTwo) {
  for (unsigned code = 0; code < 255; ++code) {
    const float v = f8_to_float(Dtype::F8_E8M0, static_cast<std::uint8_t>(code));
    EXPECT_EQ(static_cast<double>(v), std::pow(2.0, static_cast<int>(code) - 127)) << code;
  }
  EXPECT_TRUE(std::isnan(f8_to_float(Dtype::F8_E8M0, 0xFF)));
  EXPECT_EQ(f8_to_float(Dtype::F8_E8M0, 127), 1.0f);
}

TEST(F4, AllSixteenCodes) {
  const float magnitudes[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  for (unsigned code = 0; code < 16; ++code) {
    const float expected = (code & 8) ? -magnitudes[code & 7] : magnitudes[code & 7];
    expect_same(expected, f4_to_float(static_cast<std::uint8_t>(code)), code);
    expect_same(reference_value({2, 1, 1}, code), f4_to_float(static_cast<std::uint8_t>(code)),
                code);
  }
}

TEST(F6, AllSixtyFourCodesOfBothFormats) {
  for (unsigned code = 0; code < 64; ++code) {
    expect_same(reference_value({2, 3, 1}, code),
                f6_to_float(Dtype::F6_E2M3, static_cast<std::uint8_t>(code)), code);
    expect_same(reference_value({3, 2, 3}, code),
                f6_to_float(Dtype::F6_E3M2, static_cast<std::uint8_t>(code)), code);
  }
  EXPECT_EQ(f6_to_float(Dtype::F6_E2M3, 0x1F), 7.5f);
  EXPECT_EQ(f6_to_float(Dtype::F6_E3M2, 0x1F), 28.0f);
  EXPECT_EQ(f6_to_float(Dtype::F6_E2M3, 0x01), 0.125f);
  EXPECT_EQ(f6_to_float(Dtype::F6_E3M2, 0x01), 0.0625f);
}

TEST(Half, KnownConstantsAndAllFiniteCodes) {
  EXPECT_EQ(f16_to_float(0x3C00), 1.0f);
  EXPECT_EQ(f16_to_float(0xC000), -2.0f);
  EXPECT_EQ(f16_to_float(0x7BFF), 65504.0f);
  EXPECT_EQ(f16_to_float(0x0001), 0x1p-24f);
  EXPECT_EQ(f16_to_float(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(f16_to_float(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(f16_to_float(0x7E00)));
  for (unsigned code = 0; code < 0x10000; ++code) {
    if (((code >> 10) & 0x1F) == 0x1F) continue;
    expect_same(reference_value({5, 10, 15}, code), f16_to_float(static_cast<std::uint16_t>(code)),
                code);
  }
}

TEST(BFloat16, KnownConstants) {
  EXPECT_EQ(bf16_to_float(0x3F80), 1.0f);
  EXPECT_EQ(bf16_to_float(0xC040), -3.0f);
  EXPECT_EQ(bf16_to_float(0x0001), 0x1p-133f);
  EXPECT_EQ(bf16_to_float(0x7F80), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(bf16_to_float(0x7FC0)));
  for (unsigned code = 0; code < 0x10000; ++code) {
    if (((code >> 7) & 0xFF) == 0xFF) continue;
    expect_same(reference_value({8, 7, 127}, code), bf16_to_float(static_cast<std::uint16_t>(code)),
                code);
  }
}

TEST(Elements, SubByteElementsFormALittleEndianBitStream) {
  // F4: element 0 in the low nibble.
  const auto f4 = bytes_of({0x21, 0xF7});  // codes 1, 2, 7, 15
  EXPECT_EQ(element_as_double(Dtype::F4, f4, 0), 0.5);
  EXPECT_EQ(element_as_double(Dtype::F4, f4, 1), 1.0);
  EXPECT_EQ(element_as_double(Dtype::F4, f4, 2), 6.0);
  EXPECT_EQ(element_as_double(Dtype::F4, f4, 3), -6.0);

  // F6_E2M3 codes 0x01, 0x1F, 0x3F, 0x08 packed: bits 0-5, 6-11, 12-17, 18-23.
  const std::uint32_t codes[4] = {0x01, 0x1F, 0x3F, 0x08};
  std::uint32_t stream = 0;
  for (int i = 0; i < 4; ++i) stream |= codes[i] << (6 * i);
  const auto f6 = bytes_of({stream & 0xFF, (stream >> 8) & 0xFF, (stream >> 16) & 0xFF});
  for (unsigned i = 0; i < 4; ++i) {
    EXPECT_EQ(element_as_double(Dtype::F6_E2M3, f6, i), reference_value({2, 3, 1}, codes[i])) << i;
  }
  EXPECT_EQ(format_element(Dtype::F6_E2M3, f6, 2), "-7.5");
  EXPECT_THROW((void)element_as_double(Dtype::F6_E2M3, f6, 4), Error);
}

TEST(Elements, IntegersAreExact) {
  const auto u64 = raw<std::uint64_t>({std::numeric_limits<std::uint64_t>::max(), 42});
  EXPECT_EQ(format_element(Dtype::U64, u64, 0), "18446744073709551615");
  EXPECT_EQ(format_element(Dtype::U64, u64, 1), "42");
  const auto i64 = raw<std::int64_t>({std::numeric_limits<std::int64_t>::min(), -1});
  EXPECT_EQ(format_element(Dtype::I64, i64, 0), "-9223372036854775808");
  EXPECT_EQ(format_element(Dtype::I64, i64, 1), "-1");
  EXPECT_EQ(element_as_double(Dtype::I64, i64, 1), -1.0);
  const auto i8 = bytes_of({0x80, 0x7F, 0xFF});
  EXPECT_EQ(format_element(Dtype::I8, i8, 0), "-128");
  EXPECT_EQ(format_element(Dtype::I8, i8, 1), "127");
  EXPECT_EQ(format_element(Dtype::U8, i8, 2), "255");
  const auto i16 = raw<std::int16_t>({-300, 300});
  EXPECT_EQ(format_element(Dtype::I16, i16, 0), "-300");
  EXPECT_EQ(element_as_double(Dtype::U16, i16, 1), 300.0);
  const auto i32 = raw<std::int32_t>({-70000});
  EXPECT_EQ(format_element(Dtype::I32, i32, 0), "-70000");
  EXPECT_EQ(format_element(Dtype::U32, i32, 0), "4294897296");
}

TEST(Elements, FloatsUseShortestRoundTripText) {
  const auto f32 = raw<float>({0.1f, -2.5f, std::numeric_limits<float>::infinity(),
                               -std::numeric_limits<float>::infinity(),
                               std::numeric_limits<float>::quiet_NaN(), 1e30f});
  EXPECT_EQ(format_element(Dtype::F32, f32, 0), "0.1");
  EXPECT_EQ(format_element(Dtype::F32, f32, 1), "-2.5");
  EXPECT_EQ(format_element(Dtype::F32, f32, 2), "inf");
  EXPECT_EQ(format_element(Dtype::F32, f32, 3), "-inf");
  EXPECT_EQ(format_element(Dtype::F32, f32, 4), "nan");
  EXPECT_EQ(format_element(Dtype::F32, f32, 5), "1e+30");
  EXPECT_EQ(element_as_double(Dtype::F32, f32, 0), static_cast<double>(0.1f));

  const auto f64 = raw<double>({0.1, -0.0});
  EXPECT_EQ(format_element(Dtype::F64, f64, 0), "0.1");
  EXPECT_EQ(format_element(Dtype::F64, f64, 1), "-0");

  const auto bf16 = raw<std::uint16_t>({0x3F80, 0x3F81, 0x7FC0});
  EXPECT_EQ(format_element(Dtype::BF16, bf16, 0), "1");
  EXPECT_EQ(format_element(Dtype::BF16, bf16, 1), "1.0078125");
  EXPECT_EQ(format_element(Dtype::BF16, bf16, 2), "nan");

  const auto f16 = raw<std::uint16_t>({0x3555, 0x7C00, 0x0001});
  EXPECT_EQ(format_element(Dtype::F16, f16, 0), "0.33325195");
  EXPECT_EQ(format_element(Dtype::F16, f16, 1), "inf");
  EXPECT_EQ(element_as_double(Dtype::F16, f16, 2), 0x1p-24);

  const auto f8 = bytes_of({0x7E, 0x7F, 0x7C, 0x38});
  EXPECT_EQ(format_element(Dtype::F8_E4M3, f8, 0), "448");
  EXPECT_EQ(format_element(Dtype::F8_E4M3, f8, 1), "nan");
  EXPECT_EQ(format_element(Dtype::F8_E5M2, f8, 2), "inf");
  EXPECT_EQ(format_element(Dtype::F8_E4M3, f8, 3), "1");
  EXPECT_EQ(format_element(Dtype::F8_E8M0, f8, 0), "0.5");
}

TEST(Elements, BoolAndComplex) {
  const auto b = bytes_of({0, 1});
  EXPECT_EQ(format_element(Dtype::BOOL, b, 0), "false");
  EXPECT_EQ(format_element(Dtype::BOOL, b, 1), "true");
  EXPECT_EQ(element_as_double(Dtype::BOOL, b, 1), 1.0);

  const auto c64 = raw<float>({1.5f, -2.0f, 0.25f, 3.0f});
  EXPECT_EQ(format_element(Dtype::C64, c64, 0), "(1.5, -2)");
  EXPECT_EQ(format_element(Dtype::C64, c64, 1), "(0.25, 3)");
  EXPECT_EQ(element_as_double(Dtype::C64, c64, 1), 0.25);
}

TEST(Elements, OutOfRangeIndexThrows) {
  const auto f32 = raw<float>({1.0f});
  EXPECT_THROW((void)format_element(Dtype::F32, f32, 1), Error);
  EXPECT_THROW((void)element_as_double(Dtype::U64, f32, 0), Error);
  EXPECT_THROW((void)format_element(Dtype::F32, f32, std::numeric_limits<std::uint64_t>::max()),
               Error);
}

}  // namespace
}  // namespace safetensors
