#include "error/messages.hpp"

namespace safetensors::detail {
namespace {

// Long enough for any real tensor name, short enough to keep a message readable.
constexpr std::size_t max_shown_bytes = 200;
constexpr std::size_t max_shown_values = 16;

bool is_utf8_continuation(char c) {
  return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

}  // namespace

std::string quote(std::string_view name) {
  static constexpr char hex[] = "0123456789abcdef";
  std::size_t shown = name.size();
  if (shown > max_shown_bytes) {
    shown = max_shown_bytes;
    while (shown > 0 && is_utf8_continuation(name[shown])) --shown;
  }
  std::string out = "`";
  for (char c : name.substr(0, shown)) {
    auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7F) {
      out += "\\x";
      out += hex[byte >> 4];
      out += hex[byte & 0xF];
    } else {
      out += c;
    }
  }
  if (shown < name.size()) out += "...(" + std::to_string(name.size()) + " bytes)";
  out += '`';
  return out;
}

std::string format_list(std::span<const std::uint64_t> values) {
  std::string out = "[";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ", ";
    if (i == max_shown_values) {
      out += "... (" + std::to_string(values.size()) + " values)";
      break;
    }
    out += std::to_string(values[i]);
  }
  out += ']';
  return out;
}

void fail(ErrorCode code, std::string_view origin, std::string_view message) {
  std::string full;
  full.reserve(origin.size() + 2 + message.size());
  full += origin;
  if (!origin.empty()) full += ": ";
  full += message;
  throw Error(code, full);
}

}  // namespace safetensors::detail
