// The host side of the device casts: which kernel converts a pair, the 8-bit float tables
// handed to it, and the kernels' element operations run on the host (the emulated device's
// casts, which thereby test the operations the GPU runs).
#pragma once

#include <cstddef>
#include <optional>

#include "device/cast_ops.hpp"
#include "safetensors/dtype.hpp"

namespace safetensors::detail {

/// The kernel converting `from` into `to`, or nullopt when there is none (identity, or a pair
/// the CPU cast does not support either).
std::optional<DeviceCastKind> device_cast_kind(Dtype from, Dtype to) noexcept;

/// The table of an 8-bit float `from` converted into `to` (F32, F16 or BF16), made by the CPU
/// cast of all 256 codes, so the device gives its bits; computed once.
const F8Table& device_cast_table(Dtype from, Dtype to);

/// What the kernel of the pair does to `count` elements, run on the host. `in` and `out`
/// need no alignment here.
void run_device_cast_on_host(Dtype from, const std::byte* in, Dtype to, std::byte* out,
                             std::size_t count);

}  // namespace safetensors::detail
