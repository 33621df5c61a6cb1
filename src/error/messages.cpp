#include "error/messages.hpp"

#include "encoding/escape.hpp"
#include "encoding/utf8.hpp"

namespace safetensors::detail {
namespace {

// Long enough for any real tensor name, short enough to keep a message readable.
constexpr std::size_t max_shown_bytes = 200;
constexpr std::size_t max_shown_values = 16;

}  // namespace

std::string quote(std::string_view name) {
  const std::size_t shown = utf8_cut_point(name, max_shown_bytes);
  std::string out = "`";
  append_escaped_controls(out, name.substr(0, shown));
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
