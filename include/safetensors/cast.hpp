// Converting tensor elements between floating-point dtypes while copying.
#pragma once

#include <cstddef>
#include <span>

#include "safetensors/dtype.hpp"
#include "safetensors/export.hpp"

namespace safetensors {

/// True for the conversions `cast` supports: identity for every dtype; F32, F16 and BF16 to
/// each other; the 8-bit floats (F8_E4M3, F8_E5M2, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ) to F16,
/// BF16 and F32. Not yet: into the 8-bit floats, and the sub-byte F4/F6 formats.
[[nodiscard]] SAFETENSORS_API bool can_cast(Dtype from, Dtype to) noexcept;

/// Converts `in` (elements of `from`) into `out` (the same number of elements of `to`).
/// Results are bit-identical to torch 2's `tensor.to(dtype)`: round to nearest even, NaN and
/// infinity preserved, NaN payloads as torch 2 leaves them. Throws `Error` (invalid_argument) for
/// an unsupported pair or when the sizes do not describe the same element count.
SAFETENSORS_API void cast(Dtype from, std::span<const std::byte> in, Dtype to,
                          std::span<std::byte> out);

}  // namespace safetensors
