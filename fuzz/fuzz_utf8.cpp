// libFuzzer target for the text toolkit (src/encoding/). The UTF-8 decoder's verdict must be
// simdjson's (an independent, SIMD implementation) on every input; each character it decodes
// must encode back to the same bytes; accepting surrogates may only change the verdict on
// surrogates. Every JSON string mode must give JSON that simdjson parses back to the input
// (when it is UTF-8), and escaped text must hold no control character.
#include <simdjson.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "../src/encoding/escape.hpp"
#include "../src/encoding/utf8.hpp"
#include "require.hpp"

namespace {

using fuzz::require;
using namespace safetensors::detail;

// Walks `text` one decoded character at a time; true when every byte belongs to one.
bool decodes_whole(std::string_view text, Surrogates surrogates) {
  for (std::size_t at = 0; at < text.size();) {
    const Utf8Char c = decode_utf8(text, at, surrogates);
    if (c.length == 0) return false;
    std::string encoded;
    append_utf8(encoded, c.code_point);
    require(encoded == text.substr(at, c.length), "a decoded character encodes to its bytes");
    require(c.code_point <= 0x10FFFF, "no code point above U+10FFFF");
    const bool surrogate = c.code_point >= 0xD800 && c.code_point <= 0xDFFF;
    require(!surrogate || surrogates == Surrogates::accept, "surrogates only when accepted");
    if (c.length != decode_utf8(text, at, Surrogates::refuse).length) {
      require(surrogate, "accepting surrogates changes the verdict on surrogates only");
    }
    at += c.length;
  }
  return true;
}

// Whether simdjson reads `json` as one JSON string, equal to `expected` when `compare`.
bool parses_to(const std::string& json, std::string_view expected, bool compare) {
  simdjson::dom::parser parser;
  std::string_view parsed;
  if (parser.parse(simdjson::padded_string(json)).get_string().get(parsed)) return false;
  return !compare || parsed == expected;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const bool valid = simdjson::validate_utf8(text.data(), text.size());
  require(is_utf8(text) == valid, "is_utf8 agrees with simdjson::validate_utf8");
  require(decodes_whole(text, Surrogates::refuse) == valid,
          "decoding character by character agrees with simdjson::validate_utf8");
  const bool valid_with_surrogates = is_utf8(text, Surrogates::accept);
  require(decodes_whole(text, Surrogates::accept) == valid_with_surrogates,
          "decoding with surrogates agrees with is_utf8 with surrogates");
  require(!valid || valid_with_surrogates, "accepting surrogates refuses nothing more");

  // The reference mode keeps invalid bytes raw, so only UTF-8 input makes valid JSON.
  if (valid) {
    require(parses_to(json_string(text, JsonText::reference), text, true),
            "reference-mode JSON reads back as the text");
  }
  require(parses_to(json_string(text, JsonText::utf8), text, valid),
          "utf8-mode JSON is always valid and reads back as UTF-8 text");
  const std::string ascii = json_string(text, JsonText::ascii);
  require(parses_to(ascii, text, valid), "ascii-mode JSON is always valid and reads back");
  for (const char c : ascii) {
    const auto byte = static_cast<unsigned char>(c);
    require(byte >= 0x20 && byte < 0x7F, "ascii-mode JSON is printable ASCII");
  }

  const std::string shown = escape_controls(text);
  for (const char c : shown) {
    const auto byte = static_cast<unsigned char>(c);
    require(byte >= 0x20 && byte != 0x7F, "escaped text holds no control character");
  }
  // Leading continuation bytes (not UTF-8) leave nothing to keep: the cut falls to 0.
  const std::size_t cut = utf8_cut_point(text, size / 2);
  require(cut <= size / 2 && (cut == 0 || cut == size || !is_utf8_continuation(text[cut])),
          "the cut point starts a character");
  return 0;
}
