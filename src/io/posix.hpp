// The library's own calls to the operating system outside a Source: opening an input so that
// nothing but a regular file gets through, reading small whole files, and the one way from
// errno to an Error. Format code never includes this.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace safetensors::detail {

/// Throws `Error(io, "<name>: <what>: <system message for err>")`.
[[noreturn]] void throw_os_error(std::string_view name, std::string_view what, int err);

/// Opens `path` read-only (plus `extra_flags`, e.g. O_DIRECT) and returns the descriptor.
/// Anything but a regular file is refused with `not_regular_file` before it can block:
/// open(2) of a FIFO without a writer never returns, and a read from a terminal or socket
/// waits for input. Block devices are refused too (their st_size is 0 and nobody stores a
/// safetensors file on a raw device). Other failures throw io, naming the file.
int open_regular_file(const std::string& path, int extra_flags = 0);

/// Reads a regular file whole, but at most `limit + 1` bytes, so a caller can refuse a file
/// over its limit without holding more of it. Throws like `open_regular_file`.
std::string read_regular_file(const std::string& path, std::uint64_t limit);

}  // namespace safetensors::detail
