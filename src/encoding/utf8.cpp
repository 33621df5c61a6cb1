#include "encoding/utf8.hpp"

namespace safetensors::detail {

// The well-formed sequences of the Unicode standard (table 3-7): the lead byte sets the
// length, and narrows the range of the second byte where a wider one would be overlong,
// a surrogate or beyond U+10FFFF.
Utf8Char decode_utf8(std::string_view text, std::size_t at, Surrogates surrogates) noexcept {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[at + k]); };
  const unsigned char lead = byte(0);
  if (lead < 0x80) return {lead, 1};
  std::size_t length = 0;
  char32_t code_point = 0;
  unsigned char low = 0x80, high = 0xBF;  // allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2, code_point = lead & 0x1F;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3, code_point = lead & 0x0F;
    if (lead == 0xE0) low = 0xA0;                                       // overlong
    if (lead == 0xED && surrogates == Surrogates::refuse) high = 0x9F;  // surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4, code_point = lead & 0x07;
    if (lead == 0xF0) low = 0x90;   // overlong
    if (lead == 0xF4) high = 0x8F;  // above U+10FFFF
  } else {
    return {};
  }
  if (length > text.size() - at) return {};
  if (byte(1) < low || byte(1) > high) return {};
  for (std::size_t k = 1; k < length; ++k) {
    if (!is_utf8_continuation(static_cast<char>(byte(k)))) return {};
    code_point = (code_point << 6) | (byte(k) & 0x3F);
  }
  return {code_point, length};
}

bool is_utf8(std::string_view text, Surrogates surrogates) noexcept {
  for (std::size_t at = 0; at < text.size();) {
    if (static_cast<unsigned char>(text[at]) < 0x80) {  // ASCII, the common case
      ++at;
      continue;
    }
    const std::size_t length = decode_utf8(text, at, surrogates).length;
    if (length == 0) return false;
    at += length;
  }
  return true;
}

void append_utf8(std::string& out, char32_t code_point) {
  const auto continuation = [](char32_t bits) { return static_cast<char>(0x80 | (bits & 0x3F)); };
  if (code_point < 0x80) {
    out += static_cast<char>(code_point);
  } else if (code_point < 0x800) {
    out += static_cast<char>(0xC0 | (code_point >> 6));
    out += continuation(code_point);
  } else if (code_point < 0x10000) {
    out += static_cast<char>(0xE0 | (code_point >> 12));
    out += continuation(code_point >> 6);
    out += continuation(code_point);
  } else {
    out += static_cast<char>(0xF0 | (code_point >> 18));
    out += continuation(code_point >> 12);
    out += continuation(code_point >> 6);
    out += continuation(code_point);
  }
}

std::size_t utf8_cut_point(std::string_view text, std::size_t max_bytes) noexcept {
  if (max_bytes >= text.size()) return text.size();
  std::size_t cut = max_bytes;
  while (cut > 0 && is_utf8_continuation(text[cut])) --cut;
  return cut;
}

}  // namespace safetensors::detail
