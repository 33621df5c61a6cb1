// Message helpers shared by the header parser: every message starts with the file name and
// shows header-controlled text on one line.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "safetensors/error.hpp"

namespace safetensors::detail {

/// `name` in backticks, with control bytes escaped and very long names shortened, so a
/// hostile header cannot break a log line or flood it.
std::string quote(std::string_view name);

/// "[1, 2, 3]".
std::string format_list(std::span<const std::uint64_t> values);

/// Throws `Error(code, "<origin>: <message>")`.
[[noreturn]] void fail(ErrorCode code, std::string_view origin, std::string_view message);

}  // namespace safetensors::detail
