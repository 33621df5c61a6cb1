#include "device/device_cast.hpp"

#include <array>
#include <cstdint>
#include <cstring>
#include <mutex>

#include "safetensors/cast.hpp"
#include "safetensors/error.hpp"

namespace safetensors::detail {
namespace {

bool is_f8(Dtype dtype) noexcept {
  return dtype == Dtype::F8_E4M3 || dtype == Dtype::F8_E5M2 || dtype == Dtype::F8_E8M0 ||
         dtype == Dtype::F8_E4M3FNUZ || dtype == Dtype::F8_E5M2FNUZ;
}

template <class Op>
void run(const Op& op, const std::byte* in, std::byte* out, std::size_t count) {
  using In = typename Op::In;
  using Out = typename Op::Out;
  for (std::size_t i = 0; i < count; ++i) {
    In x;
    std::memcpy(&x, in + i * sizeof(In), sizeof(In));
    const Out y = op(x);
    std::memcpy(out + i * sizeof(Out), &y, sizeof(Out));
  }
}

}  // namespace

std::optional<DeviceCastKind> device_cast_kind(Dtype from, Dtype to) noexcept {
  using enum DeviceCastKind;
  if (from == to) return std::nullopt;
  if (is_f8(from)) {
    if (to == Dtype::F32) return f8_to_f32;
    if (to == Dtype::F16 || to == Dtype::BF16) return f8_to_16;
    return std::nullopt;
  }
  if (from == Dtype::F32 && to == Dtype::F16) return f32_to_f16;
  if (from == Dtype::F32 && to == Dtype::BF16) return f32_to_bf16;
  if (from == Dtype::F16 && to == Dtype::F32) return f16_to_f32;
  if (from == Dtype::BF16 && to == Dtype::F32) return bf16_to_f32;
  if (from == Dtype::F16 && to == Dtype::BF16) return f16_to_bf16;
  if (from == Dtype::BF16 && to == Dtype::F16) return bf16_to_f16;
  return std::nullopt;
}

const F8Table& device_cast_table(Dtype from, Dtype to) {
  constexpr Dtype sources[] = {Dtype::F8_E4M3, Dtype::F8_E5M2, Dtype::F8_E8M0, Dtype::F8_E4M3FNUZ,
                               Dtype::F8_E5M2FNUZ};
  constexpr Dtype targets[] = {Dtype::F32, Dtype::F16, Dtype::BF16};
  static std::array<F8Table, 15> tables;
  static std::once_flag made;
  std::call_once(made, [&] {
    std::array<std::byte, 256> codes;
    for (unsigned i = 0; i < 256; ++i) codes[i] = static_cast<std::byte>(i);
    for (std::size_t s = 0; s < 5; ++s) {
      for (std::size_t t = 0; t < 3; ++t) {
        const std::size_t width = dtype_bits(targets[t]) / 8;
        std::array<std::byte, 256 * 4> out;
        cast(sources[s], codes, targets[t], {out.data(), 256 * width});
        F8Table& table = tables[s * 3 + t];
        for (unsigned i = 0; i < 256; ++i) {
          if (width == 4) {
            std::memcpy(&table.value[i], &out[i * 4], 4);
          } else {
            std::uint16_t half;
            std::memcpy(&half, &out[i * 2], 2);
            table.value[i] = half;
          }
        }
      }
    }
  });
  for (std::size_t s = 0; s < 5; ++s) {
    for (std::size_t t = 0; t < 3; ++t) {
      if (sources[s] == from && targets[t] == to) return tables[s * 3 + t];
    }
  }
  throw Error(ErrorCode::invalid_argument, "no device cast table for " +
                                               std::string(dtype_name(from)) + " to " +
                                               std::string(dtype_name(to)));
}

void run_device_cast_on_host(Dtype from, const std::byte* in, Dtype to, std::byte* out,
                             std::size_t count) {
  const std::optional<DeviceCastKind> kind = device_cast_kind(from, to);
  if (!kind) {
    throw Error(ErrorCode::invalid_argument, "no device cast converts " +
                                                 std::string(dtype_name(from)) + " to " +
                                                 std::string(dtype_name(to)));
  }
  switch (*kind) {
    case DeviceCastKind::f32_to_f16:
      return run(F32ToF16{}, in, out, count);
    case DeviceCastKind::f32_to_bf16:
      return run(F32ToBf16{}, in, out, count);
    case DeviceCastKind::f16_to_f32:
      return run(F16ToF32{}, in, out, count);
    case DeviceCastKind::bf16_to_f32:
      return run(Bf16ToF32{}, in, out, count);
    case DeviceCastKind::f16_to_bf16:
      return run(F16ToBf16{}, in, out, count);
    case DeviceCastKind::bf16_to_f16:
      return run(Bf16ToF16{}, in, out, count);
    case DeviceCastKind::f8_to_f32:
      return run(F8Lookup<std::uint32_t>{device_cast_table(from, to).value}, in, out, count);
    case DeviceCastKind::f8_to_16:
      return run(F8Lookup<std::uint16_t>{device_cast_table(from, to).value}, in, out, count);
    case DeviceCastKind::count:
      break;
  }
}

}  // namespace safetensors::detail
