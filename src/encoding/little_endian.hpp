// Little-endian integers in byte buffers: every binary format we read or write (safetensors'
// header length, zip records, .npy headers, pickle arguments, torch storages) stores them so.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>

namespace safetensors::detail {

/// The byte types buffers come in.
template <typename B>
concept byte_like =
    std::same_as<B, std::byte> || std::same_as<B, char> || std::same_as<B, unsigned char>;

/// The unsigned integer that all of `bytes` (at most 8) hold, least significant byte first;
/// for fields whose width is known only at run time.
template <byte_like B>
constexpr std::uint64_t load_le_bytes(std::span<const B> bytes) noexcept {
  std::uint64_t value = 0;
  for (std::size_t i = bytes.size(); i-- > 0;) {
    value = (value << 8) | static_cast<std::uint8_t>(bytes[i]);
  }
  return value;
}

/// The `T` held in the first sizeof(T) bytes of `bytes`, which the caller has checked are
/// there.
template <std::unsigned_integral T, byte_like B>
constexpr T load_le(std::span<const B> bytes) noexcept {
  return static_cast<T>(load_le_bytes(bytes.first(sizeof(T))));
}

/// Writes `value` into all of `out` (at most 8 bytes), least significant byte first.
template <byte_like B>
constexpr void store_le(std::uint64_t value, std::span<B> out) noexcept {
  for (B& byte : out) {
    byte = static_cast<B>(value & 0xFF);
    value >>= 8;
  }
}

}  // namespace safetensors::detail
