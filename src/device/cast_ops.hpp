// The element operations of the device casts, shared by the CUDA kernels (cast_kernels.cu,
// compiled by nvcc) and the emulated device (device_cast.cpp runs them on the host): both
// convert through loader/cast_kernels.hpp's functions, the CPU casts' own, so a device cast
// gives the host loader's bits by construction. Nothing here may need more than nvcc's
// device-side C++ (no library calls beyond constexpr ones).
#pragma once

#include <cstdint>

#include "loader/cast_kernels.hpp"

namespace safetensors::detail {

/// One kernel per conversion. The 8-bit float sources share two table kernels: the table
/// (F8Table) holds the 256 results, computed on the host by the CPU cast.
enum class DeviceCastKind : int {
  f32_to_f16,
  f32_to_bf16,
  f16_to_f32,
  bf16_to_f32,
  f16_to_bf16,
  bf16_to_f16,
  f8_to_f32,
  f8_to_16,  // F16 or BF16: the table's low halves
  count,
};

/// The kernels' names in the fatbin, by DeviceCastKind (extern "C", so unmangled).
inline constexpr const char* device_cast_kernel_names[] = {
    "safetensors_cast_f32_to_f16",  "safetensors_cast_f32_to_bf16", "safetensors_cast_f16_to_f32",
    "safetensors_cast_bf16_to_f32", "safetensors_cast_f16_to_bf16", "safetensors_cast_bf16_to_f16",
    "safetensors_cast_f8_to_f32",   "safetensors_cast_f8_to_16",
};
static_assert(sizeof(device_cast_kernel_names) / sizeof(device_cast_kernel_names[0]) ==
              static_cast<int>(DeviceCastKind::count));

/// An 8-bit float source's 256 results; 16-bit results sit in the low half. 1 KiB, passed to
/// the kernel by value (kernel parameters may take 4 KiB).
struct F8Table {
  std::uint32_t value[256];
};

// One element conversion as the kernels and the emulator call it.
template <class InBits, class OutBits, OutBits (*convert)(InBits)>
struct ElementCast {
  using In = InBits;
  using Out = OutBits;
  SAFETENSORS_HOST_DEVICE Out operator()(In x) const { return convert(x); }
};
using F32ToF16 = ElementCast<std::uint32_t, std::uint16_t, f32_to_f16>;
using F32ToBf16 = ElementCast<std::uint32_t, std::uint16_t, f32_to_bf16>;
using F16ToF32 = ElementCast<std::uint16_t, std::uint32_t, f16_to_f32>;
using Bf16ToF32 = ElementCast<std::uint16_t, std::uint32_t, bf16_to_f32>;
// Through F32 as the CPU cast (and torch) does: see cast.cpp's through_f32.
using F16ToBf16 = ElementCast<std::uint16_t, std::uint16_t, f16_to_bf16>;
using Bf16ToF16 = ElementCast<std::uint16_t, std::uint16_t, bf16_to_f16>;
template <class Result>
struct F8Lookup {
  using In = std::uint8_t;
  using Out = Result;
  const std::uint32_t* table;  // 256 entries
  SAFETENSORS_HOST_DEVICE Out operator()(In x) const { return static_cast<Out>(table[x]); }
};

}  // namespace safetensors::detail
