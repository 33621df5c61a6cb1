// Bulk dtype conversion: picks a kernel for the pair and the CPU, checks the sizes.
#include "safetensors/cast.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <string>

#include "loader/cast_kernels.hpp"
#include "safetensors/error.hpp"
#include "safetensors/values.hpp"

namespace safetensors {
namespace {

using detail::bf16_to_f32;
using detail::f16_to_f32;
using detail::f32_to_bf16;
using detail::f32_to_bf16_scalar_nan;
using detail::f32_to_f16;

using Kernel = void (*)(const std::byte* in, std::byte* out, std::size_t count);

// Unaligned element access through memcpy: tensors inside a file have any alignment, and
// compilers turn these into plain vector loads and stores.
template <class In, class Out, Out (*convert)(In)>
[[gnu::always_inline]] inline void convert_loop(const std::byte* in, std::byte* out,
                                                std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    In x;
    std::memcpy(&x, in + i * sizeof(In), sizeof(In));
    const Out y = convert(x);
    std::memcpy(out + i * sizeof(Out), &y, sizeof(Out));
  }
}

template <class In, class Out, Out (*convert)(In)>
void portable_kernel(const std::byte* in, std::byte* out, std::size_t count) {
  convert_loop<In, Out, convert>(in, out, count);
}

#if defined(__x86_64__) || defined(__i386__)
// The same loop compiled for AVX2, chosen at run time; the scalar bit logic is identical, so
// both give the same bits.
template <class In, class Out, Out (*convert)(In)>
__attribute__((target("avx2"))) void avx2_kernel(const std::byte* in, std::byte* out,
                                                 std::size_t count) {
  convert_loop<In, Out, convert>(in, out, count);
}

bool has_avx2() noexcept {
  static const bool supported = __builtin_cpu_supports("avx2");
  return supported;
}

template <class In, class Out, Out (*convert)(In)>
Kernel pick() noexcept {
  return has_avx2() ? &avx2_kernel<In, Out, convert> : &portable_kernel<In, Out, convert>;
}
#else
template <class In, class Out, Out (*convert)(In)>
Kernel pick() noexcept {
  return &portable_kernel<In, Out, convert>;
}
#endif

// Between the two 16-bit formats torch goes through float32, and so does this: in blocks
// that stay in L1, each pass a loop that vectorizes (GCC does not vectorize the fused one).
template <std::uint32_t (*widen)(std::uint16_t), std::uint16_t (*narrow)(std::uint32_t)>
void through_f32(const std::byte* in, std::byte* out, std::size_t count) {
  static const Kernel first = pick<std::uint16_t, std::uint32_t, widen>();
  static const Kernel second = pick<std::uint32_t, std::uint16_t, narrow>();
  constexpr std::size_t block = 2048;
  alignas(64) std::byte wide[block * 4];
  for (std::size_t i = 0; i < count; i += block) {
    const std::size_t n = std::min(block, count - i);
    first(in + 2 * i, wide, n);
    second(wide, out + 2 * i, n);
  }
}

// The 8-bit formats widen through a 256-entry table, exactly except E8M0 into F16 (its
// powers of two beyond F16's range round like any float: to infinity or, below 2^-24, to
// zero). NaNs (E4M3FN: S.1111.111, E5M2: exponent all ones with a mantissa, E8M0: 0xFF, the
// FNUZ formats: 0x80) get the bits torch 2's scalar conversions give (torch 1.13 has no
// float8): to F32, E5M2 goes through F16 bits scaled by a float multiply, which keeps sign and
// payload and sets the quiet bit, E4M3FN's integer decoding gives sign | 0x7FF00000, and E8M0
// and the FNUZ formats give 0x7F800001 (c10's NaN of them: the smallest signalling one);
// F16 is then made from that float like any other, BF16 is 0x7FC0 without the sign (c10's
// round_to_nearest_even).
struct F8Tables {
  std::array<std::uint32_t, 256> f32{};
  std::array<std::uint16_t, 256> f16{};
  std::array<std::uint16_t, 256> bf16{};
};

F8Tables make_f8_tables(Dtype dtype) noexcept {
  F8Tables tables;
  for (unsigned code = 0; code < 256; ++code) {
    const float value = f8_to_float(dtype, static_cast<std::uint8_t>(code));
    const bool negative = (code & 0x80u) != 0;
    if (value != value) {
      const std::uint32_t sign = negative ? 0x80000000u : 0u;
      if (dtype == Dtype::F8_E5M2) {
        tables.f32[code] = sign | 0x7FC00000u | (static_cast<std::uint32_t>(code & 3u) << 21);
      } else if (dtype == Dtype::F8_E4M3) {
        tables.f32[code] = sign | 0x7FF00000u;
      } else {
        tables.f32[code] = 0x7F800001u;  // E8M0 and FNUZ: one NaN code each, no sign
      }
      tables.f16[code] = f32_to_f16(tables.f32[code]);
      tables.bf16[code] = 0x7FC0u;
      continue;
    }
    // Every value is exact in F32 and BF16 and, but for E8M0's, in F16.
    const std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
    tables.f32[code] = bits;
    tables.f16[code] = f32_to_f16(bits);
    tables.bf16[code] = f32_to_bf16(bits);
  }
  return tables;
}

const F8Tables& f8_tables(Dtype dtype) noexcept {
  static const F8Tables e4m3 = make_f8_tables(Dtype::F8_E4M3);
  static const F8Tables e5m2 = make_f8_tables(Dtype::F8_E5M2);
  static const F8Tables e8m0 = make_f8_tables(Dtype::F8_E8M0);
  static const F8Tables e4m3fnuz = make_f8_tables(Dtype::F8_E4M3FNUZ);
  static const F8Tables e5m2fnuz = make_f8_tables(Dtype::F8_E5M2FNUZ);
  switch (dtype) {
    case Dtype::F8_E4M3:
      return e4m3;
    case Dtype::F8_E5M2:
      return e5m2;
    case Dtype::F8_E8M0:
      return e8m0;
    case Dtype::F8_E4M3FNUZ:
      return e4m3fnuz;
    default:
      return e5m2fnuz;
  }
}

template <class Out>
void lookup(const std::array<Out, 256>& table, const std::byte* in, std::byte* out,
            std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    const Out y = table[static_cast<std::uint8_t>(in[i])];
    std::memcpy(out + i * sizeof(Out), &y, sizeof(Out));
  }
}

bool is_f8(Dtype dtype) noexcept {
  return dtype == Dtype::F8_E4M3 || dtype == Dtype::F8_E5M2 || dtype == Dtype::F8_E8M0 ||
         dtype == Dtype::F8_E4M3FNUZ || dtype == Dtype::F8_E5M2FNUZ;
}

bool is_wide_float(Dtype dtype) noexcept {
  return dtype == Dtype::F32 || dtype == Dtype::F16 || dtype == Dtype::BF16;
}

// nullptr for identity and the F8 sources, which are handled apart.
Kernel wide_kernel(Dtype from, Dtype to) noexcept {
  using u16 = std::uint16_t;
  using u32 = std::uint32_t;
  if (from == Dtype::F32 && to == Dtype::BF16) return pick<u32, u16, f32_to_bf16>();
  if (from == Dtype::F32 && to == Dtype::F16) return pick<u32, u16, f32_to_f16>();
  if (from == Dtype::F16 && to == Dtype::F32) return pick<u16, u32, f16_to_f32>();
  if (from == Dtype::BF16 && to == Dtype::F32) return pick<u16, u32, bf16_to_f32>();
  if (from == Dtype::F16 && to == Dtype::BF16)
    return &through_f32<f16_to_f32, f32_to_bf16_scalar_nan>;
  if (from == Dtype::BF16 && to == Dtype::F16) return &through_f32<bf16_to_f32, f32_to_f16>;
  return nullptr;
}

[[noreturn]] void reject(Dtype from, std::size_t in_bytes, Dtype to, std::size_t out_bytes,
                         const std::string& why) {
  throw Error(ErrorCode::invalid_argument, "cannot cast " + std::to_string(in_bytes) +
                                               " bytes of " + std::string(dtype_name(from)) +
                                               " into " + std::to_string(out_bytes) + " bytes of " +
                                               std::string(dtype_name(to)) + ": " + why);
}

}  // namespace

bool can_cast(Dtype from, Dtype to) noexcept {
  if (from == to) return true;
  if (!is_wide_float(to)) return false;
  return is_wide_float(from) || is_f8(from);
}

void cast(Dtype from, std::span<const std::byte> in, Dtype to, std::span<std::byte> out) {
  if (!can_cast(from, to)) reject(from, in.size(), to, out.size(), "unsupported conversion");
  if (from == to) {
    // Sub-byte dtypes have no whole-element size; identity only needs equal lengths.
    if (in.size() != out.size()) reject(from, in.size(), to, out.size(), "sizes differ");
    if (!in.empty()) std::memmove(out.data(), in.data(), in.size());
    return;
  }
  const std::size_t in_width = dtype_bits(from) / 8;
  const std::size_t out_width = dtype_bits(to) / 8;
  const std::size_t count = in.size() / in_width;
  if (in.size() % in_width != 0) {
    reject(from, in.size(), to, out.size(), "the input is not a whole number of elements");
  }
  if (out.size() / out_width != count || out.size() % out_width != 0) {
    reject(from, in.size(), to, out.size(),
           "the output must hold exactly " + std::to_string(count) + " elements (" +
               std::to_string(count * out_width) + " bytes)");
  }
  if (count == 0) return;
  if (is_f8(from)) {
    const F8Tables& tables = f8_tables(from);
    if (to == Dtype::F32) return lookup(tables.f32, in.data(), out.data(), count);
    if (to == Dtype::F16) return lookup(tables.f16, in.data(), out.data(), count);
    return lookup(tables.bf16, in.data(), out.data(), count);
  }
  wide_kernel(from, to)(in.data(), out.data(), count);
}

}  // namespace safetensors
