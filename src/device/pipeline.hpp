// The device pipeline: a LoadJob's pieces read by worker threads into a ring of pinned
// staging slots, each full slot copied to the device asynchronously, a slot reused only after
// the event recorded behind its copies has completed. A converting piece is either cast on
// the host into the slot, or staged as stored, copied into the slot's region of device
// staging memory and cast from there by a kernel queued behind the copy, before the event.
#pragma once

#include <cstdint>

#include "device/device_api.hpp"
#include "safetensors/checkpoint.hpp"
#include "safetensors/device.hpp"
#include "safetensors/loader.hpp"

namespace safetensors::detail {

/// Test hooks: ways to break the pipeline on purpose, to show the emulator catches it.
struct PipelineFaults {
  /// Reuse a slot without waiting for the copies out of it (a broken ring).
  bool skip_slot_wait = false;
  /// Queue each device cast before the copy that stages its source.
  bool cast_before_copy = false;
  /// Queue each device cast on another stream than its staging copy (needs two streams).
  bool cast_on_other_stream = false;
  /// Issue every direct read twice (bytes written twice on the device).
  bool direct_read_twice = false;
  /// Direct reads land this many bytes past their destination (out of bounds at the end).
  std::size_t direct_read_shift = 0;
};

/// The ring a load uses: `slots` buffers of `slot_bytes`, `streams` copy streams.
struct RingShape {
  unsigned slots = 0;
  std::size_t slot_bytes = 0;
  unsigned streams = 0;
};

/// Resolves the options' defaults and bounds for a load of `total_bytes` on `threads`.
RingShape ring_shape(const DeviceLoadOptions& options, unsigned threads, std::uint64_t total_bytes);

/// Frees the pinned staging memory loads on `device` kept (its pinned_cache()); returns the
/// bytes freed.
std::uint64_t release_pinned_staging(DeviceApi& device);

/// Loads `plan` into `device_buffer` (device memory of `device_bytes` bytes) through `device`.
/// Every copy is complete when this returns or throws.
DeviceLoadStats run_device_load(DeviceApi& device, const Checkpoint& checkpoint,
                                const LoadPlan& plan, std::byte* device_buffer,
                                std::uint64_t device_bytes, const DeviceLoadOptions& options,
                                const PipelineFaults& faults = {});

}  // namespace safetensors::detail
