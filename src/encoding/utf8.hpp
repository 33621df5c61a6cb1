// UTF-8: the one decoder every reader, writer and message helper uses. Lowest layer: it
// reports what it finds and leaves errors to its callers.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace safetensors::detail {

/// Encoded surrogates (U+D800..U+DFFF): UTF-8 proper refuses them; CPython's
/// 'surrogatepass', which pickles are read with, accepts them.
enum class Surrogates : bool { refuse, accept };

/// One decoded character. `length` is 0 when the bytes at that position are not a valid
/// sequence: a stray continuation byte or invalid lead byte (0xC0, 0xC1, 0xF5..0xFF), a
/// missing continuation byte, a sequence cut short by the end of the text, an overlong
/// form, a code point above U+10FFFF or (unless accepted) a surrogate.
struct Utf8Char {
  char32_t code_point = 0;
  std::size_t length = 0;
};

/// Decodes the sequence starting at `text[at]` (`at < text.size()`).
Utf8Char decode_utf8(std::string_view text, std::size_t at,
                     Surrogates surrogates = Surrogates::refuse) noexcept;

/// Whether all of `text` is valid UTF-8.
bool is_utf8(std::string_view text, Surrogates surrogates = Surrogates::refuse) noexcept;

/// Appends `code_point` (at most U+10FFFF) in UTF-8; surrogates are encoded like any other
/// code point, as CPython's str may hold them.
void append_utf8(std::string& out, char32_t code_point);

/// Whether `byte` continues a sequence (10xxxxxx) rather than starting one.
constexpr bool is_utf8_continuation(char byte) noexcept {
  return (static_cast<unsigned char>(byte) & 0xC0) == 0x80;
}

/// The longest prefix length of at most `max_bytes` that does not end inside a sequence,
/// for shortening text without leaving half a character.
std::size_t utf8_cut_point(std::string_view text, std::size_t max_bytes) noexcept;

}  // namespace safetensors::detail
