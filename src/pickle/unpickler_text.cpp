#include "pickle/unpickler_text.hpp"

#include <charconv>
#include <cmath>
#include <limits>
#include <span>

#include "encoding/hex.hpp"
#include "encoding/little_endian.hpp"
#include "encoding/utf8.hpp"

namespace safetensors::detail::pickle {
namespace {

bool is_space(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string_view trim(std::string_view text) noexcept {
  while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
  return text;
}

// Two's-complement negation in place (little-endian, fixed width).
void negate(std::string& bytes) {
  unsigned carry = 1;
  for (char& ch : bytes) {
    const unsigned v = (~static_cast<unsigned char>(ch) & 0xFFu) + carry;
    ch = static_cast<char>(v & 0xFF);
    carry = v >> 8;
  }
}

}  // namespace

std::string canonical_twos_complement(std::string bytes) {
  while (!bytes.empty()) {
    const auto last = static_cast<unsigned char>(bytes.back());
    const bool negative = bytes.size() >= 2
                              ? (static_cast<unsigned char>(bytes[bytes.size() - 2]) & 0x80) != 0
                              : false;
    if (bytes.size() == 1) {
      if (last != 0) break;
    } else if (!((last == 0x00 && !negative) || (last == 0xFF && negative))) {
      break;
    }
    bytes.pop_back();
  }
  return bytes;
}

std::optional<std::int64_t> to_int64(std::string_view canonical) {
  if (canonical.size() > 8) return std::nullopt;
  if (canonical.empty()) return 0;
  std::uint64_t value = load_le_bytes(std::span<const char>(canonical));
  if ((static_cast<unsigned char>(canonical.back()) & 0x80) != 0 && canonical.size() < 8) {
    value |= ~std::uint64_t{0} << (8 * canonical.size());  // sign-extend
  }
  return static_cast<std::int64_t>(value);
}

std::optional<std::string> parse_decimal(std::string_view text, bool allow_leading_zeros) {
  text = trim(text);
  bool negative = false;
  if (!text.empty() && (text.front() == '+' || text.front() == '-')) {
    negative = text.front() == '-';
    text.remove_prefix(1);
  }
  if (text.empty() || text.size() > max_decimal_digits) return std::nullopt;
  if (!allow_leading_zeros && text.size() > 1 && text.front() == '0' &&
      text.find_first_not_of('0') != text.npos) {
    return std::nullopt;  // Python rejects leading zeros; C's strtol would read octal
  }
  std::string magnitude;  // little-endian base 256
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    unsigned carry = static_cast<unsigned>(c - '0');
    for (char& byte : magnitude) {
      const unsigned v = static_cast<unsigned char>(byte) * 10u + carry;
      byte = static_cast<char>(v & 0xFF);
      carry = v >> 8;
    }
    if (carry != 0) magnitude += static_cast<char>(carry);
  }
  magnitude += '\0';  // room for the sign bit
  if (negative) negate(magnitude);
  return canonical_twos_complement(std::move(magnitude));
}

std::optional<double> parse_float(std::string_view text) {
  text = trim(text);
  if (!text.empty() && text.front() == '+') {
    text.remove_prefix(1);
    if (!text.empty() && (text.front() == '+' || text.front() == '-')) return std::nullopt;
  }
  if (text.empty()) return std::nullopt;
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec == std::errc::result_out_of_range) {
    // Python gives +-inf for overflow and 0 for underflow; from_chars reports both.
    const bool negative = text.front() == '-';
    const auto exponent = text.find_first_of("eE");
    const bool tiny = exponent != text.npos && text.find('-', exponent) != text.npos;
    if (end != text.data() + text.size()) return std::nullopt;
    if (tiny) return negative ? -0.0 : 0.0;
    return negative ? -std::numeric_limits<double>::infinity()
                    : std::numeric_limits<double>::infinity();
  }
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::optional<std::string> decode_quoted_string(std::string_view line) {
  if (line.size() < 2 || line.front() != line.back() ||
      (line.front() != '\'' && line.front() != '"')) {
    return std::nullopt;
  }
  line = line.substr(1, line.size() - 2);
  std::string out;
  out.reserve(line.size());
  for (std::size_t i = 0; i < line.size(); ++i) {
    if (line[i] != '\\') {
      out += line[i];
      continue;
    }
    if (++i == line.size()) return std::nullopt;  // trailing backslash
    const char c = line[i];
    switch (c) {
      case '\n':
        break;  // line continuation
      case '\\':
        out += '\\';
        break;
      case '\'':
        out += '\'';
        break;
      case '"':
        out += '"';
        break;
      case 'a':
        out += '\a';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'v':
        out += '\v';
        break;
      case 'x': {
        if (i + 2 >= line.size()) return std::nullopt;
        const int hi = hex_digit_value(line[i + 1]);
        const int lo = hex_digit_value(line[i + 2]);
        if (hi < 0 || lo < 0) return std::nullopt;
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        break;
      }
      default:
        if (c >= '0' && c <= '7') {
          unsigned value = static_cast<unsigned>(c - '0');
          for (int k = 0; k < 2 && i + 1 < line.size() && line[i + 1] >= '0' && line[i + 1] <= '7';
               ++k) {
            value = value * 8 + static_cast<unsigned>(line[++i] - '0');
          }
          out += static_cast<char>(value & 0xFF);
        } else {
          out += '\\';  // unknown escapes are kept as written
          out += c;
        }
    }
  }
  return out;
}

std::optional<std::string> decode_raw_unicode_escape(std::string_view line) {
  std::string out;
  out.reserve(line.size());
  for (std::size_t i = 0; i < line.size();) {
    if (line[i] != '\\') {
      append_utf8(out, static_cast<unsigned char>(line[i++]));
      continue;
    }
    // Only an odd run of backslashes escapes the u/U after it.
    std::size_t run = 0;
    while (i < line.size() && line[i] == '\\') {
      ++run;
      ++i;
    }
    const bool escape = run % 2 == 1 && i < line.size() && (line[i] == 'u' || line[i] == 'U');
    out.append(escape ? run - 1 : run, '\\');
    if (!escape) continue;
    const std::size_t digits = line[i] == 'u' ? 4 : 8;
    if (i + digits >= line.size()) return std::nullopt;  // truncated escape
    std::uint32_t cp = 0;
    for (std::size_t k = 1; k <= digits; ++k) {
      const int d = hex_digit_value(line[i + k]);
      if (d < 0) return std::nullopt;
      cp = cp * 16 + static_cast<std::uint32_t>(d);
    }
    if (cp > 0x10FFFF) return std::nullopt;
    append_utf8(out, cp);
    i += digits + 1;
  }
  return out;
}

bool is_identifier(std::string_view text) noexcept {
  if (text.empty()) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    if (!letter && !(digit && i > 0)) return false;
  }
  return true;
}

bool is_module_path(std::string_view text) noexcept {
  while (true) {
    const auto dot = text.find('.');
    if (!is_identifier(text.substr(0, dot))) return false;
    if (dot == text.npos) return true;
    text.remove_prefix(dot + 1);
  }
}

}  // namespace safetensors::detail::pickle
