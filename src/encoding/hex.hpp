// Hexadecimal digits, both ways: the one table behind every \xNN, \uNNNN and 0x... we write.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace safetensors::detail {

/// Lowercase, as Python and the reference write escapes.
inline constexpr std::string_view hex_digits = "0123456789abcdef";

/// Appends the low `digits` hex digits of `value`, most significant first ("00ff" for 255
/// and 4 digits).
inline void append_hex(std::string& out, std::uint64_t value, unsigned digits) {
  for (unsigned i = digits; i-- > 0;) out += hex_digits[(value >> (4 * i)) & 0xF];
}

/// "0x" and `value` in hex, padded with zeros to at least `min_digits` digits ("0x1f",
/// "0x0000001f" with 8).
inline std::string hex_number(std::uint64_t value, unsigned min_digits = 1) {
  unsigned digits = 1;
  while (digits < 16 && (value >> (4 * digits)) != 0) ++digits;
  std::string out = "0x";
  append_hex(out, value, digits > min_digits ? digits : min_digits);
  return out;
}

/// The value of a hex digit of either case, or -1 for any other character.
constexpr int hex_digit_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace safetensors::detail
