// What kind of foreign file a source holds, judged from its first bytes: the one place where
// `scan` and `convert` tell a zip, a .npy and a pickle apart. Which zip (a torch.save archive
// or an .npz) and which pickle (a raw one or a legacy torch file) takes reading further, and
// each caller reads further in its own way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "safetensors/source.hpp"

namespace safetensors::detail {

enum class InputFormat : std::uint8_t {
  zip,      // "PK\3\4": torch.save's archive, an .npz or another zip
  npy,      // "\x93NUMPY": one numpy array
  pickle,   // a plausible first opcode: a raw pickle, or a legacy torch.save file
  unknown,  // none of these, or too short to tell
};

/// How many leading bytes `detect_format` needs to decide.
inline constexpr std::size_t format_prefix_size = 8;

/// The format the bytes `head` (the start of a file or entry) begin with.
InputFormat detect_format(std::span<const std::byte> head) noexcept;

/// The format of `source` from its first `format_prefix_size` bytes (fewer when shorter).
InputFormat detect_format(const Source& source);

}  // namespace safetensors::detail
