// Decoding single elements of every dtype, for display and checks (not a bulk cast).
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "safetensors/dtype.hpp"
#include "safetensors/export.hpp"

namespace safetensors {

/// IEEE half to float (exact).
[[nodiscard]] SAFETENSORS_API float f16_to_float(std::uint16_t bits) noexcept;
/// bfloat16 to float (exact).
[[nodiscard]] SAFETENSORS_API float bf16_to_float(std::uint16_t bits) noexcept;
/// The 8-bit float formats to float (exact): E4M3 (FN, no infinity), E5M2, E4M3FNUZ,
/// E5M2FNUZ (0x80 is the only NaN), E8M0 (scale 2^(e-127), 0xFF is NaN).
[[nodiscard]] SAFETENSORS_API float f8_to_float(Dtype dtype, std::uint8_t bits) noexcept;
/// FP4 (E2M1) and the FP6 formats (E2M3, E3M2) from their low bits; no infinity or NaN.
[[nodiscard]] SAFETENSORS_API float f4_to_float(std::uint8_t bits) noexcept;
[[nodiscard]] SAFETENSORS_API float f6_to_float(Dtype dtype, std::uint8_t bits) noexcept;

/// Element `index` of a tensor as a double: bools as 0/1, integers (precision lost above
/// 2^53), every float format; for C64 the real part. Sub-byte elements are packed
/// little-endian within bytes: element 0 in the lowest bits.
[[nodiscard]] SAFETENSORS_API double element_as_double(Dtype dtype, std::span<const std::byte> data,
                                                       std::uint64_t index);

/// Element `index` as text: integers exactly, floats with the shortest digits that round
/// trip, "nan"/"inf"/"-inf", bools as true/false, C64 as "(re, im)".
[[nodiscard]] SAFETENSORS_API std::string format_element(Dtype dtype,
                                                         std::span<const std::byte> data,
                                                         std::uint64_t index);

}  // namespace safetensors
