// What the device pipeline needs from a device: memory on it, pinned host memory to stage
// in, asynchronous host-to-device copies on streams, events to know when a copy is done, and
// optionally dtype conversion on the device (kernels queued on the same streams).
// Two implementations: CudaDevice (cuda.hpp, the CUDA runtime loaded at run time) and
// EmulatedDevice (emulated.hpp, host memory, every copy checked).
#pragma once

#include <cstddef>
#include <string>

#include "safetensors/dtype.hpp"

namespace safetensors::detail {

class PinnedCache;

using DeviceStream = void*;
using DeviceEvent = void*;

/// Calls may come from any thread. Errors are Error(device) naming the call.
class DeviceApi {
 public:
  virtual ~DeviceApi() = default;

  /// "CUDA device 0 (libcudart.so.12)", "emulated device".
  virtual std::string describe() const = 0;
  /// Makes this device current on a thread the pipeline started (the constructing thread
  /// already has it).
  virtual void bind_thread() {}

  virtual std::byte* allocate(std::size_t bytes) = 0;
  virtual void free(std::byte* memory) noexcept = 0;
  virtual std::byte* allocate_pinned(std::size_t bytes) = 0;
  virtual void free_pinned(std::byte* memory) noexcept = 0;
  /// Where loads keep their pinned staging memory for the next load on this device's
  /// provider (pinned_cache.hpp); nullptr: nothing is kept, every load allocates its own.
  virtual PinnedCache* pinned_cache() noexcept { return nullptr; }

  virtual DeviceStream create_stream() = 0;
  virtual void destroy_stream(DeviceStream stream) noexcept = 0;
  virtual DeviceEvent create_event() = 0;
  virtual void destroy_event(DeviceEvent event) noexcept = 0;

  /// Queues a copy of `bytes` from pinned `host` to `device` on `stream`; returns at once.
  virtual void copy_async(std::byte* device, const std::byte* host, std::size_t bytes,
                          DeviceStream stream) = 0;
  /// Marks the point in `stream` after everything queued so far.
  virtual void record(DeviceEvent event, DeviceStream stream) = 0;
  /// Blocks until the event's last recorded point is reached.
  virtual void wait(DeviceEvent event) = 0;
  /// Blocks until everything queued on `stream` is done.
  virtual void synchronize(DeviceStream stream) = 0;

  /// Whether cast_async converts `from` into `to` on this device; when not, sets `why` (one
  /// sentence: no kernel for the pair, none built, or the driver refused them).
  virtual bool can_cast(Dtype from, Dtype to, std::string& why) {
    (void)from;
    (void)to;
    why = describe() + " has no device casts";
    return false;
  }
  /// Queues on `stream` the conversion of `count` elements of `from` at `device_in` into `to`
  /// at `device_out` (both device memory, each aligned to its element size); returns at once.
  /// It runs after everything queued on `stream` before it. Only for pairs can_cast accepts.
  virtual void cast_async(Dtype from, const std::byte* device_in, Dtype to, std::byte* device_out,
                          std::size_t count, DeviceStream stream) = 0;

  /// The host is about to write [host, host + bytes) of pinned memory. A real device ignores
  /// it; the emulator checks that no queued copy still reads those bytes.
  virtual void staging_write(const std::byte* host, std::size_t bytes) {
    (void)host;
    (void)bytes;
  }
  /// Pinned memory [host, host + bytes) is about to be kept for the next load (PinnedCache).
  /// A real device ignores it; the emulator checks that no queued copy still reads it, as it
  /// does when pinned memory is freed.
  virtual void staging_kept(const std::byte* host, std::size_t bytes) noexcept {
    (void)host;
    (void)bytes;
  }
};

}  // namespace safetensors::detail
