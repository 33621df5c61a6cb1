// What the device pipeline needs from a device: memory on it, pinned host memory to stage
// in, asynchronous host-to-device copies on streams, events to know when a copy is done, and
// optionally dtype conversion on the device (kernels queued on the same streams).
// Two implementations: CudaDevice (cuda.hpp, the CUDA runtime loaded at run time) and
// EmulatedDevice (emulated.hpp, host memory, every copy checked).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "safetensors/dtype.hpp"

namespace safetensors::detail {

class PinnedCache;

/// A shard file a load reads straight into device memory (DeviceApi::read_direct); the io
/// layer's descriptors (BulkReader), valid for the load.
struct DirectFile {
  int fd = -1;         // buffered
  int direct_fd = -1;  // opened with O_DIRECT, or -1 (GDS wants one; cuFile falls back without)
  const std::string* name = nullptr;
};

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

  /// Whether read_direct reads files into device memory; when not, sets `why` (one sentence).
  /// `required`: the load insists (DirectReads::on), so a direct path that is no faster than
  /// the ring (cuFile in compatibility mode) is accepted.
  virtual bool can_read_direct(bool required, std::string& why) {
    (void)required;
    why = describe() + " cannot read files into device memory directly";
    return false;
  }
  /// Reads `bytes` at `offset` of `file` into device memory `dest`, synchronously (from worker
  /// threads, bound to this device), ordered with nothing queued on any stream: the pipeline
  /// reads directly only into bytes no copy or cast writes. Returns false, having written
  /// nothing, when this file cannot be read directly (`why` says why; the caller sends it
  /// through the ring). Throws Error(io) naming the file and offset when a read fails.
  virtual bool read_direct(const DirectFile& file, std::uint64_t offset, std::byte* dest,
                           std::size_t bytes, std::string& why) {
    (void)file;
    (void)offset;
    (void)dest;
    (void)bytes;
    why = describe() + " cannot read files into device memory directly";
    return false;
  }
  /// The load's files are about to be closed: whatever read_direct registered for their
  /// descriptors is given up now, while they are still open (cuFile wants its handles
  /// deregistered before the descriptor closes; a later file may get the same number).
  virtual void end_direct_reads() noexcept {}

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
