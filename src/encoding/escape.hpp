// Making text safe to show: as JSON strings, and on one line of a message or terminal.
#pragma once

#include <string>
#include <string_view>

namespace safetensors::detail {

/// What a JSON string keeps raw. All modes escape `"`, `\` and U+0000..U+001F, the five
/// with short forms as \b \t \n \f \r and the others as \u00XX (lowercase).
enum class JsonText {
  /// docs/FORMAT.md "Writing", as the reference writes headers: every other byte is written as
  /// it is, UTF-8 or not (the writer refuses text that is not UTF-8 before this).
  reference,
  /// The command's output: as `reference`, but each byte that does not start a valid UTF-8
  /// sequence becomes \ufffd, so the output is valid JSON whatever the input.
  utf8,
  /// Python's json.dumps with ensure_ascii (its default), which writes checkpoint indexes:
  /// only printable ASCII is raw; other characters, U+007F included, are \uXXXX, those
  /// beyond U+FFFF as a surrogate pair. Invalid bytes become \ufffd, so callers that must
  /// match Python check is_utf8 first.
  ascii,
};

/// Appends `text` to `out` as a quoted JSON string.
void append_json_string(std::string& out, std::string_view text, JsonText mode);

/// `text` as a quoted JSON string.
std::string json_string(std::string_view text, JsonText mode);

/// Appends `text` with the C0 control characters and DEL written as \xNN, so text from a
/// file cannot break or rewrite the line it is shown on.
void append_escaped_controls(std::string& out, std::string_view text);

/// `text` with control characters escaped as append_escaped_controls does.
std::string escape_controls(std::string_view text);

}  // namespace safetensors::detail
