// Element types of the safetensors format: names, bit widths and the writer's ordering.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include "safetensors/export.hpp"

namespace safetensors {

/// Every element type docs/FORMAT.md defines. The enumerator order is not the file order; use
/// `dtype_write_rank` for the order the reference writer lays tensors out in.
enum class Dtype : std::uint8_t {
  BOOL,
  U8,
  I8,
  F8_E5M2,
  F8_E4M3,
  F8_E8M0,
  F8_E4M3FNUZ,
  F8_E5M2FNUZ,
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  I64,
  U64,
  F64,
  C64,
  F4,
  F6_E2M3,
  F6_E3M2,
};

inline constexpr std::size_t dtype_count = 22;

/// All dtypes in enumerator order.
[[nodiscard]] SAFETENSORS_API std::span<const Dtype> all_dtypes() noexcept;

/// The case-sensitive name used in headers, e.g. "BF16".
[[nodiscard]] SAFETENSORS_API std::string_view dtype_name(Dtype dtype) noexcept;

/// Looks up a header dtype name; nullopt when unknown (names are case-sensitive).
[[nodiscard]] SAFETENSORS_API std::optional<Dtype> dtype_from_name(std::string_view name) noexcept;

/// Bits per element: 4 for F4, 6 for the F6 types, otherwise 8 * bytes.
[[nodiscard]] SAFETENSORS_API unsigned dtype_bits(Dtype dtype) noexcept;

/// Position in the reference writer's order (0 = written first: U64, I64, F64, ...).
[[nodiscard]] SAFETENSORS_API unsigned dtype_write_rank(Dtype dtype) noexcept;

/// Why a shape cannot be stored in a dtype.
enum class SizeProblem : std::uint8_t { none, overflow, misaligned };

/// Result of `byte_size`: either a byte count or the problem that prevents one.
struct SAFETENSORS_API ByteSize {
  std::uint64_t bytes = 0;
  SizeProblem problem = SizeProblem::none;
  explicit operator bool() const noexcept { return problem == SizeProblem::none; }
};

/// product(shape) * bits / 8, with overflow checks on every multiplication and a
/// misalignment report when a sub-byte dtype's bit total is not a multiple of 8.
[[nodiscard]] SAFETENSORS_API ByteSize byte_size(Dtype dtype,
                                                 std::span<const std::uint64_t> shape) noexcept;

/// product(shape) with overflow checks; nullopt on overflow.
[[nodiscard]] SAFETENSORS_API std::optional<std::uint64_t> element_count(
    std::span<const std::uint64_t> shape) noexcept;

}  // namespace safetensors
