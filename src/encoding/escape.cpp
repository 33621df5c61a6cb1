#include "encoding/escape.hpp"

#include "encoding/hex.hpp"
#include "encoding/utf8.hpp"

namespace safetensors::detail {
namespace {

constexpr char32_t replacement_character = 0xFFFD;

void append_u_escape(std::string& out, char32_t code_unit) {
  out += "\\u";
  append_hex(out, code_unit, 4);
}

// The escapes every mode shares; false when `c` needs none of them.
bool append_short_escape(std::string& out, char32_t c) {
  switch (c) {
    case '"':
      out += "\\\"";
      return true;
    case '\\':
      out += "\\\\";
      return true;
    case '\b':
      out += "\\b";
      return true;
    case '\t':
      out += "\\t";
      return true;
    case '\n':
      out += "\\n";
      return true;
    case '\f':
      out += "\\f";
      return true;
    case '\r':
      out += "\\r";
      return true;
    default:
      if (c < 0x20) {
        append_u_escape(out, c);
        return true;
      }
      return false;
  }
}

}  // namespace

void append_json_string(std::string& out, std::string_view text, JsonText mode) {
  out += '"';
  for (std::size_t at = 0; at < text.size();) {
    const auto byte = static_cast<unsigned char>(text[at]);
    if (byte < 0x80 || mode == JsonText::reference) {
      if (!append_short_escape(out, byte)) {
        if (byte == 0x7F && mode == JsonText::ascii) {
          append_u_escape(out, byte);
        } else {
          out += static_cast<char>(byte);
        }
      }
      ++at;
      continue;
    }
    const Utf8Char decoded = decode_utf8(text, at);
    if (decoded.length == 0) {
      append_u_escape(out, replacement_character);
      ++at;
    } else if (mode == JsonText::utf8) {
      out.append(text.substr(at, decoded.length));
      at += decoded.length;
    } else if (decoded.code_point < 0x10000) {
      append_u_escape(out, decoded.code_point);
      at += decoded.length;
    } else {
      const char32_t above_bmp = decoded.code_point - 0x10000;
      append_u_escape(out, 0xD800 | (above_bmp >> 10));
      append_u_escape(out, 0xDC00 | (above_bmp & 0x3FF));
      at += decoded.length;
    }
  }
  out += '"';
}

std::string json_string(std::string_view text, JsonText mode) {
  std::string out;
  out.reserve(text.size() + 2);
  append_json_string(out, text, mode);
  return out;
}

void append_escaped_controls(std::string& out, std::string_view text) {
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7F) {
      out += "\\x";
      append_hex(out, byte, 2);
    } else {
      out += c;
    }
  }
}

std::string escape_controls(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  append_escaped_controls(out, text);
  return out;
}

}  // namespace safetensors::detail
