#include "cli_common.hpp"

#include <fmt/core.h>

#include <array>
#include <cmath>
#include <cstdio>

namespace safetensors::cli {
namespace {

// Length of the valid UTF-8 sequence starting at text[i], or 0 when it is not valid.
std::size_t utf8_sequence_length(std::string_view text, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  std::size_t length = 0;
  unsigned char low = 0x80, high = 0xBF;  // allowed range of the second byte
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;   // overlong
    if (lead == 0xED) high = 0x9F;  // surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;   // overlong
    if (lead == 0xF4) high = 0x8F;  // above U+10FFFF
  } else {
    return 0;
  }
  if (i + length > text.size()) return 0;
  if (byte(i + 1) < low || byte(i + 1) > high) return 0;
  for (std::size_t k = 2; k < length; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return length;
}

}  // namespace

std::string human_size(std::uint64_t bytes) {
  static constexpr std::array<const char*, 6> units = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return fmt::format("{} B", bytes);
  double value = static_cast<double>(bytes) / 1024;
  std::size_t unit = 0;
  while (value >= 1024 && unit + 1 < units.size()) {
    value /= 1024;
    ++unit;
  }
  return fmt::format("{:.1f} {}", value, units[unit]);
}

std::string human_count(std::uint64_t count) {
  static constexpr std::array<const char*, 5> suffixes = {"K", "M", "B", "T", "Q"};
  if (count < 1000) return fmt::format("{}", count);
  double value = static_cast<double>(count) / 1000;
  std::size_t suffix = 0;
  while (value >= 1000 && suffix + 1 < suffixes.size()) {
    value /= 1000;
    ++suffix;
  }
  return fmt::format("{:.2f} {}", value, suffixes[suffix]);
}

std::string shape_text(const std::vector<std::uint64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i != 0) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (std::size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += fmt::format("\\u{:04x}", c);
        } else if (std::size_t length = utf8_sequence_length(text, i); length > 1) {
          out.append(text.substr(i, length));
          i += length;
          continue;
        } else if (length == 1) {
          out += static_cast<char>(c);
        } else {
          out += "\\ufffd";
        }
    }
    ++i;
  }
  return out + "\"";
}

std::string json_numbers(const std::vector<std::uint64_t>& values) {
  std::vector<std::string> encoded;
  encoded.reserve(values.size());
  for (std::uint64_t value : values) encoded.push_back(std::to_string(value));
  return json_array(encoded);
}

std::string json_array(const std::vector<std::string>& encoded) {
  std::string out = "[";
  for (std::size_t i = 0; i < encoded.size(); ++i) out += (i == 0 ? "" : ",") + encoded[i];
  return out + "]";
}

std::string json_number(double value) {
  return std::isfinite(value) ? fmt::format("{}", value) : "null";
}

std::string json_element(const std::string& text) {
  if (text == "true" || text == "false") return text;
  // format_element writes numbers as to_chars does: digits, '-', '.', 'e', '+' only.
  const bool number =
      !text.empty() && text.find_first_not_of("0123456789-.e+") == std::string::npos;
  return number ? text : json_string(text);
}

JsonObject& JsonObject::raw(std::string_view key, std::string_view encoded) {
  if (out_.size() > 1) out_ += ',';
  out_ += json_string(key);
  out_ += ':';
  out_ += encoded;
  return *this;
}

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7F) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += ch;
    }
  }
  return out;
}

void print_error(std::string_view message) {
  fmt::print(stderr, "safetensors: {}\n", message);
}

}  // namespace safetensors::cli
