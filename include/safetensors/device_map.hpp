// Planning where each module of a checkpoint goes under per-device memory budgets, as
// accelerate's infer_auto_device_map does, from the headers alone (docs/PARALLEL.md).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "safetensors/checkpoint.hpp"
#include "safetensors/dtype.hpp"
#include "safetensors/export.hpp"

namespace safetensors {

/// A device and its budget in bytes ("cuda:0", "cpu", "disk", ...).
struct SAFETENSORS_API DeviceBudget {
  std::string device;
  std::uint64_t bytes = 0;
};

struct SAFETENSORS_API DeviceMapOptions {
  /// Budgets; devices are filled in this order: GPUs ("cuda:N", "N", ...) by index, other
  /// accelerators, then "cpu", then "disk" (always last, unbounded, added when absent).
  std::vector<DeviceBudget> max_memory;
  /// Modules never split across devices, as names with layer numbers written `*` or as they
  /// are ("model.layers.*").
  std::vector<std::string> no_split;
  /// Floating-point tensors are counted at this dtype's size (as they would be loaded).
  std::optional<Dtype> dtype;
};

/// One module (or tensor) and where it goes.
struct SAFETENSORS_API DeviceAssignment {
  std::string module;
  std::string device;
  std::uint64_t bytes = 0;
};

struct SAFETENSORS_API DeviceMap {
  /// In checkpoint order (names in natural order: layer 2 before layer 10).
  std::vector<DeviceAssignment> modules;
  /// Bytes placed per device, in fill order (devices given nothing included).
  std::vector<DeviceBudget> used;
  /// The device of a tensor: its own entry's or its closest module's; empty if none.
  [[nodiscard]] std::string device_of(std::string_view tensor_name) const;
};

/// Assigns modules to devices in order: a module goes whole to the current device when it
/// fits in what is left of its budget; otherwise it is split into its submodules (unless in
/// `no_split`, or a tensor) or the next device is taken. Reads no tensor. Throws
/// invalid_argument for a device named twice or an unknown dtype conversion.
[[nodiscard]] SAFETENSORS_API DeviceMap plan_device_map(const Checkpoint& checkpoint,
                                                        const DeviceMapOptions& options);

}  // namespace safetensors
