// Decoding the arguments of pickle opcodes: integers of any size, the text forms of
// protocol 0 and name checks. Private helpers of unpickler.cpp.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace safetensors::detail::pickle {

/// CPython refuses to convert longer decimal strings (int_max_str_digits); so do we, which
/// also keeps the quadratic conversion cheap.
inline constexpr std::size_t max_decimal_digits = 4300;

/// Strips redundant sign-extension bytes from a two's-complement little-endian integer so
/// equal numbers have equal bytes ("" is zero).
std::string canonical_twos_complement(std::string bytes);

/// The value when a canonical two's-complement integer fits in int64.
std::optional<std::int64_t> to_int64(std::string_view canonical);

/// A decimal integer as canonical two's-complement little-endian bytes, or nullopt when
/// `text` is not [whitespace][sign]digits[whitespace] (no leading zeros, as Python's
/// int(text, 0), unless `allow_leading_zeros`), or has more than max_decimal_digits digits.
std::optional<std::string> parse_decimal(std::string_view text, bool allow_leading_zeros = false);

/// Python's float(text) for what repr() writes: decimal, exponent, inf, nan.
std::optional<double> parse_float(std::string_view text);

/// STRING's argument: quoted with ' or ", backslash escapes as codecs.escape_decode.
std::optional<std::string> decode_quoted_string(std::string_view line);

/// UNICODE's argument: Latin-1 bytes with \uXXXX and \UXXXXXXXX escapes, as UTF-8 (lone
/// surrogates are kept, encoded like any code point, as CPython's str holds them).
std::optional<std::string> decode_raw_unicode_escape(std::string_view line);

/// A Python identifier in ASCII ([A-Za-z_][A-Za-z0-9_]*).
bool is_identifier(std::string_view text) noexcept;

/// Identifiers joined by single dots ("torch._utils").
bool is_module_path(std::string_view text) noexcept;

}  // namespace safetensors::detail::pickle
