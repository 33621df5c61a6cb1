// Ordering tensor names, the costliest step of validating a large header.
#pragma once

#include <cstdint>
#include <vector>

#include "safetensors/header.hpp"

namespace safetensors::detail {

/// Indices of `tensors` sorted by name (bytewise), equal names in index order.
[[nodiscard]] std::vector<std::uint32_t> order_by_name(const std::vector<TensorInfo>& tensors);

}  // namespace safetensors::detail
