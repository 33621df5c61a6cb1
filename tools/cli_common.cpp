#include "cli_common.hpp"

#include <fmt/core.h>

#include <array>
#include <cmath>
#include <cstdio>

#include "encoding/escape.hpp"

namespace safetensors::cli {

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
  return detail::json_string(text, detail::JsonText::utf8);
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
  return detail::escape_controls(text);
}

void print_error(std::string_view message) {
  fmt::print(stderr, "safetensors: {}\n", message);
}

}  // namespace safetensors::cli
