#include "safetensors/values.hpp"

#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "encoding/little_endian.hpp"
#include "safetensors/error.hpp"

namespace safetensors {
namespace {

using detail::load_le_bytes;

// A sign-magnitude binary float narrower than `float`. Every such format decodes to an exact
// float: its exponent range and mantissa width both fit inside float's.
struct MiniFloat {
  unsigned exponent_bits;
  unsigned mantissa_bits;
  int bias;
};

float decode_finite(MiniFloat format, std::uint32_t bits) {
  const std::uint32_t mantissa_mask = (1u << format.mantissa_bits) - 1;
  const std::uint32_t exponent_mask = (1u << format.exponent_bits) - 1;
  const std::uint32_t mantissa = bits & mantissa_mask;
  const std::uint32_t exponent = (bits >> format.mantissa_bits) & exponent_mask;
  const bool negative = (bits >> (format.mantissa_bits + format.exponent_bits)) & 1u;
  // Subnormals share the smallest normal exponent but lack the implicit leading one.
  const std::uint32_t significand =
      exponent == 0 ? mantissa : (mantissa | (1u << format.mantissa_bits));
  const int scale = static_cast<int>(exponent == 0 ? 1 : exponent) - format.bias -
                    static_cast<int>(format.mantissa_bits);
  const float magnitude = std::ldexp(static_cast<float>(significand), scale);
  return negative ? -magnitude : magnitude;
}

constexpr float quiet_nan = std::numeric_limits<float>::quiet_NaN();
constexpr float infinity = std::numeric_limits<float>::infinity();

// IEEE-style formats: the all-ones exponent means infinity (zero mantissa) or NaN.
float decode_ieee(MiniFloat format, std::uint32_t bits) {
  const std::uint32_t exponent_mask = (1u << format.exponent_bits) - 1;
  if (((bits >> format.mantissa_bits) & exponent_mask) != exponent_mask) {
    return decode_finite(format, bits);
  }
  if ((bits & ((1u << format.mantissa_bits) - 1)) != 0) return quiet_nan;
  const bool negative = (bits >> (format.mantissa_bits + format.exponent_bits)) & 1u;
  return negative ? -infinity : infinity;
}

// Raw bits of element `index`. Sub-byte elements form one little-endian bit stream, so a
// 6-bit element may straddle two bytes.
std::uint64_t element_bits(Dtype dtype, std::span<const std::byte> data, std::uint64_t index) {
  const unsigned bits = dtype_bits(dtype);
  const std::uint64_t first_bit = index * bits;
  const std::uint64_t end_bit = first_bit + bits;
  if (index > std::numeric_limits<std::uint64_t>::max() / 64 || end_bit > data.size() * 8) {
    throw Error(ErrorCode::invalid_argument,
                "element " + std::to_string(index) + " of a " + std::string(dtype_name(dtype)) +
                    " tensor is outside its " + std::to_string(data.size()) + " bytes");
  }
  if (bits % 8 == 0) return load_le_bytes(data.subspan(first_bit / 8, bits / 8));
  const std::uint64_t first_byte = first_bit / 8;
  const unsigned span_bytes = static_cast<unsigned>((end_bit + 7) / 8 - first_byte);
  const std::uint64_t window = load_le_bytes(data.subspan(first_byte, span_bytes));
  return (window >> (first_bit % 8)) & ((std::uint64_t{1} << bits) - 1);
}

std::string shortest(float value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value < 0 ? "-inf" : "inf";
  char buffer[64];
  auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  return std::string(buffer, result.ptr);
}

std::string shortest(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value < 0 ? "-inf" : "inf";
  char buffer[64];
  auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  return std::string(buffer, result.ptr);
}

template <typename Int>
std::string integer_text(Int value) {
  char buffer[32];
  auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  return std::string(buffer, result.ptr);
}

// Every float dtype narrower than 64 bits decodes exactly to float.
float narrow_float(Dtype dtype, std::uint64_t bits) {
  switch (dtype) {
    case Dtype::F16:
      return f16_to_float(static_cast<std::uint16_t>(bits));
    case Dtype::BF16:
      return bf16_to_float(static_cast<std::uint16_t>(bits));
    case Dtype::F32:
      return std::bit_cast<float>(static_cast<std::uint32_t>(bits));
    case Dtype::F4:
      return f4_to_float(static_cast<std::uint8_t>(bits));
    case Dtype::F6_E2M3:
    case Dtype::F6_E3M2:
      return f6_to_float(dtype, static_cast<std::uint8_t>(bits));
    default:
      return f8_to_float(dtype, static_cast<std::uint8_t>(bits));
  }
}

std::int64_t sign_extend(std::uint64_t bits, unsigned width) {
  const unsigned shift = 64 - width;
  return static_cast<std::int64_t>(bits << shift) >> shift;
}

}  // namespace

float f16_to_float(std::uint16_t bits) noexcept {
  return decode_ieee({5, 10, 15}, bits);
}

float bf16_to_float(std::uint16_t bits) noexcept {
  // bfloat16 is the upper half of a float32.
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

float f8_to_float(Dtype dtype, std::uint8_t bits) noexcept {
  switch (dtype) {
    case Dtype::F8_E5M2:
      return decode_ieee({5, 2, 15}, bits);
    case Dtype::F8_E4M3:
      // OCP E4M3FN keeps the all-ones exponent for finite values; only S.1111.111 is NaN.
      if ((bits & 0x7Fu) == 0x7Fu) return quiet_nan;
      return decode_finite({4, 3, 7}, bits);
    case Dtype::F8_E4M3FNUZ:
      // The FNUZ formats spend the negative-zero encoding on their single NaN.
      if (bits == 0x80u) return quiet_nan;
      return decode_finite({4, 3, 8}, bits);
    case Dtype::F8_E5M2FNUZ:
      if (bits == 0x80u) return quiet_nan;
      return decode_finite({5, 2, 16}, bits);
    case Dtype::F8_E8M0:
      if (bits == 0xFFu) return quiet_nan;
      return std::ldexp(1.0f, static_cast<int>(bits) - 127);
    default:
      return quiet_nan;
  }
}

float f4_to_float(std::uint8_t bits) noexcept {
  return decode_finite({2, 1, 1}, bits & 0x0Fu);
}

float f6_to_float(Dtype dtype, std::uint8_t bits) noexcept {
  const std::uint32_t low = bits & 0x3Fu;
  if (dtype == Dtype::F6_E3M2) return decode_finite({3, 2, 3}, low);
  if (dtype == Dtype::F6_E2M3) return decode_finite({2, 3, 1}, low);
  return quiet_nan;
}

double element_as_double(Dtype dtype, std::span<const std::byte> data, std::uint64_t index) {
  const std::uint64_t bits = element_bits(dtype, data, index);
  switch (dtype) {
    case Dtype::BOOL:
      return bits != 0 ? 1.0 : 0.0;
    case Dtype::U8:
    case Dtype::U16:
    case Dtype::U32:
    case Dtype::U64:
      return static_cast<double>(bits);
    case Dtype::I8:
    case Dtype::I16:
    case Dtype::I32:
    case Dtype::I64:
      return static_cast<double>(sign_extend(bits, dtype_bits(dtype)));
    case Dtype::F64:
      return std::bit_cast<double>(bits);
    case Dtype::C64:
      return std::bit_cast<float>(static_cast<std::uint32_t>(bits));
    default:
      return narrow_float(dtype, bits);
  }
}

std::string format_element(Dtype dtype, std::span<const std::byte> data, std::uint64_t index) {
  const std::uint64_t bits = element_bits(dtype, data, index);
  switch (dtype) {
    case Dtype::BOOL:
      return bits != 0 ? "true" : "false";
    case Dtype::U8:
    case Dtype::U16:
    case Dtype::U32:
    case Dtype::U64:
      return integer_text(bits);
    case Dtype::I8:
    case Dtype::I16:
    case Dtype::I32:
    case Dtype::I64:
      return integer_text(sign_extend(bits, dtype_bits(dtype)));
    case Dtype::F64:
      return shortest(std::bit_cast<double>(bits));
    case Dtype::C64: {
      // Appending instead of chaining operator+ avoids a GCC 12 -Wrestrict false positive.
      std::string text = "(";
      text += shortest(std::bit_cast<float>(static_cast<std::uint32_t>(bits)));
      text += ", ";
      text += shortest(std::bit_cast<float>(static_cast<std::uint32_t>(bits >> 32)));
      text += ")";
      return text;
    }
    default:
      return shortest(narrow_float(dtype, bits));
  }
}

}  // namespace safetensors
