// Element conversions between the float formats, written as branch-free bit manipulation so
// that loops over them auto-vectorize. Each function reproduces torch 2's `.to(dtype)` on the
// CPU bit for bit, NaN encodings included (measured on torch 2.13 over every F16/BF16 code and
// F32 edge cases; see tests/unit/cast_test.cpp). torch 1.13 differs in one place only: its
// F32 -> F16 turns every NaN into the canonical 0x7E00.
//
// The same functions are the device casts' (src/device/cast_kernels.cu): nvcc compiles them
// for the GPU too, so device and host give the same bits by construction. Only integer
// operations and one exact float subtraction are involved, which the GPU performs exactly as
// the CPU (no denormal is produced or consumed, so flush-to-zero cannot change a result).
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>

// `__host__ __device__` under nvcc (which needs --expt-relaxed-constexpr for std::min, std::max
// and std::bit_cast, constexpr host functions); nothing otherwise, so host code is unchanged.
#if defined(__CUDACC__)
#define SAFETENSORS_HOST_DEVICE __host__ __device__
#else
#define SAFETENSORS_HOST_DEVICE
#endif

namespace safetensors::detail {

inline constexpr std::uint32_t f32_abs_mask = 0x7FFFFFFFu;
inline constexpr std::uint32_t f32_infinity = 0x7F800000u;

// `condition ? a : b` through masks. With a ternary GCC moves the float arithmetic feeding
// one side into a branch, and then (floats may trap by default) refuses to vectorize.
SAFETENSORS_HOST_DEVICE inline std::uint32_t select(bool condition, std::uint32_t a,
                                                    std::uint32_t b) noexcept {
  const std::uint32_t mask = 0u - static_cast<std::uint32_t>(condition);
  return (a & mask) | (b & ~mask);
}

// Round to nearest even by adding just under half an ulp of the result, plus one when the
// kept part is odd. torch's vectorized F32->BF16 path turns every NaN into 0xFFFF.
SAFETENSORS_HOST_DEVICE inline std::uint16_t f32_to_bf16(std::uint32_t u) noexcept {
  const std::uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return static_cast<std::uint16_t>((u & f32_abs_mask) > f32_infinity ? 0xFFFFu : rounded);
}

// NaN keeps its sign and the top of its payload and is made quiet, as the F16C instruction
// vcvtps2ph that torch 2 converts with does.
SAFETENSORS_HOST_DEVICE inline std::uint16_t f32_to_f16(std::uint32_t u) noexcept {
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t a = u & f32_abs_mask;
  // Normal results: move the exponent bias from 127 to 15, then round off 13 mantissa bits;
  // a carry out of the mantissa correctly bumps the exponent, up to infinity.
  std::uint32_t normal = (a - 0x38000000u + 0xFFFu + ((a >> 13) & 1u)) >> 13;
  normal = normal < 0x7C00u ? normal : 0x7C00u;
  // Subnormal results (|x| < 2^-14): the significand with its implicit bit shifted right to
  // the 2^-24 step, rounded to nearest even the same way as above. The shift is clamped to
  // [1, 31] so that lanes whose result is not used stay defined; at 31 all rounds to zero.
  const std::uint32_t shift = std::max(std::min(126u - (a >> 23), 31u), 1u);
  const std::uint32_t significand = (a & 0x7FFFFFu) | 0x800000u;
  const std::uint32_t subnormal =
      (significand + (1u << (shift - 1u)) - 1u + ((significand >> shift) & 1u)) >> shift;
  const std::uint32_t nan = 0x7E00u | ((a >> 13) & 0x1FFu);
  const std::uint32_t magnitude = a > f32_infinity ? nan : a >= 0x38800000u ? normal : subnormal;
  return static_cast<std::uint16_t>(sign | magnitude);
}

// Exact. NaN payloads are kept and made quiet, as torch does.
SAFETENSORS_HOST_DEVICE inline std::uint32_t f16_to_f32(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t a = h & 0x7FFFu;
  const std::uint32_t normal = (a << 13) + 0x38000000u;
  const std::uint32_t special = (a << 13) | f32_infinity | (a > 0x7C00u ? 0x00400000u : 0u);
  // 0.5f + a * 2^-24 is exact (0.5f has an ulp of 2^-24), and so is subtracting 0.5f.
  const std::uint32_t subnormal =
      std::bit_cast<std::uint32_t>(std::bit_cast<float>(0x3F000000u + a) - 0.5f);
  return sign | select(a >= 0x7C00u, special, select(a >= 0x0400u, normal, subnormal));
}

// Exact: bfloat16 is the upper half of a float32 (NaN payloads kept as they are).
SAFETENSORS_HOST_DEVICE inline std::uint32_t bf16_to_f32(std::uint16_t b) noexcept {
  return static_cast<std::uint32_t>(b) << 16;
}

// F32 -> BF16 as torch's scalar BFloat16 constructor does it: NaN becomes 0x7FC0.
SAFETENSORS_HOST_DEVICE inline std::uint16_t f32_to_bf16_scalar_nan(std::uint32_t u) noexcept {
  const std::uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return static_cast<std::uint16_t>((u & f32_abs_mask) > f32_infinity ? 0x7FC0u : rounded);
}

// torch goes through float32 and then takes the scalar BFloat16 path.
SAFETENSORS_HOST_DEVICE inline std::uint16_t f16_to_bf16(std::uint16_t h) noexcept {
  return f32_to_bf16_scalar_nan(f16_to_f32(h));
}

SAFETENSORS_HOST_DEVICE inline std::uint16_t bf16_to_f16(std::uint16_t b) noexcept {
  return f32_to_f16(bf16_to_f32(b));
}

}  // namespace safetensors::detail
