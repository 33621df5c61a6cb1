// Helpers shared by the zip reader's two halves: opening (archive.cpp) and reading (read.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "error/messages.hpp"
#include "safetensors/error.hpp"
#include "safetensors/source.hpp"

namespace safetensors::detail::zip {

/// Throws `Error(invalid_archive, "<source>: entry `<name>`: <what>")`.
[[noreturn]] inline void fail_entry(const Source& source, std::string_view name,
                                    const std::string& what) {
  safetensors::detail::fail(ErrorCode::invalid_archive, source.name(),
                            "entry " + safetensors::detail::quote(name) + ": " + what);
}

/// [offset, offset + length) of the source, which the caller has checked lies inside it: a
/// view into the mapping when there is one, otherwise a copy held in `buffer`.
inline std::span<const std::byte> fetch(const Source& source, std::uint64_t offset,
                                        std::uint64_t length, std::vector<std::byte>& buffer) {
  const std::span<const std::byte> mapped = source.mapped();
  if (mapped.size() == source.size() && !mapped.empty()) {
    return mapped.subspan(static_cast<std::size_t>(offset), static_cast<std::size_t>(length));
  }
  buffer.resize(static_cast<std::size_t>(length));
  source.read_at(offset, buffer);
  return buffer;
}

}  // namespace safetensors::detail::zip
