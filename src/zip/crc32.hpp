// CRC-32 as zip and zlib define it (reflected polynomial 0xEDB88320), fast: a carry-less
// multiply fold on x86 with PCLMULQDQ, zlib's own code elsewhere and for the tails.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace safetensors::detail::zip {

/// Continues a CRC-32 over `bytes`; the same value as zlib's `crc32_z(crc, bytes)`, so
/// `crc32_update(0, a + b) == crc32_update(crc32_update(0, a), b)`.
std::uint32_t crc32_update(std::uint32_t crc, std::span<const std::byte> bytes) noexcept;

/// The CRC-32 of `bytes` (from 0), with large inputs split across the machine's cores and
/// the pieces' CRCs combined; small inputs stay on the calling thread.
std::uint32_t crc32_parallel(std::span<const std::byte> bytes);

}  // namespace safetensors::detail::zip
