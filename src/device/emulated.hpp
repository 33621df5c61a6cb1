// A device made of host memory, for running the device pipeline without a GPU. Copies are
// performed later, by the emulator's own thread (optionally slowed down, streams interleaved
// at random), as a GPU's copy engine would; and everything is checked: a copy reads only
// pinned memory and writes only inside a device allocation, the host never writes staging
// bytes that a queued copy has yet to read, pinned memory is not freed (nor kept for the next
// load) under a queued copy, and every device byte ends up written exactly once.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "device/device_api.hpp"
#include "device/pinned_cache.hpp"

namespace safetensors::detail {

class EmulatedDevice final : public DeviceApi {
 public:
  struct Options {
    /// Each copy waits this long before it runs, so that a slot reused too early shows.
    std::chrono::microseconds copy_delay{0};
    /// When non-zero, the copy_async call of this number (counting from 1) throws
    /// Error(device), as a failing cudaMemcpyAsync would.
    std::uint64_t fail_copy = 0;
    /// Seeds the order in which queued streams are served.
    unsigned seed = 1;
  };

  struct Report {
    std::uint64_t copies = 0;  // copies performed
    std::uint64_t bytes_copied = 0;
    std::uint64_t pinned_high_water = 0;   // most pinned bytes allocated at once
    std::uint64_t pinned_live = 0;         // pinned bytes still allocated
    std::uint64_t pinned_allocations = 0;  // allocate_pinned calls
    std::uint64_t pinned_frees = 0;        // free_pinned calls that freed a block
    std::uint64_t device_live = 0;         // device bytes still allocated
    std::uint64_t violation_count = 0;     // all of them; `violations` keeps the first 100
    std::vector<std::string> violations;
    bool ok() const noexcept { return violation_count == 0; }
  };

  EmulatedDevice();
  explicit EmulatedDevice(Options options);
  EmulatedDevice(const EmulatedDevice&) = delete;
  EmulatedDevice& operator=(const EmulatedDevice&) = delete;
  ~EmulatedDevice() override;

  /// Waits until every queued operation ran, then checks that every byte of every live
  /// device allocation was written exactly once.
  Report check();

  std::string describe() const override { return "emulated device"; }
  std::byte* allocate(std::size_t bytes) override;
  void free(std::byte* memory) noexcept override;
  std::byte* allocate_pinned(std::size_t bytes) override;
  void free_pinned(std::byte* memory) noexcept override;
  /// This device's own cache, so that each emulated device (each test) starts without kept
  /// memory; what it keeps at the end is freed with the device.
  PinnedCache* pinned_cache() noexcept override { return &pinned_cache_; }
  DeviceStream create_stream() override;
  void destroy_stream(DeviceStream stream) noexcept override;
  DeviceEvent create_event() override;
  void destroy_event(DeviceEvent event) noexcept override;
  void copy_async(std::byte* device, const std::byte* host, std::size_t bytes,
                  DeviceStream stream) override;
  void record(DeviceEvent event, DeviceStream stream) override;
  void wait(DeviceEvent event) override;
  void synchronize(DeviceStream stream) override;
  void staging_write(const std::byte* host, std::size_t bytes) override;
  void staging_kept(const std::byte* host, std::size_t bytes) noexcept override;

 private:
  struct Event {
    std::uint64_t recorded = 0;
    std::uint64_t completed = 0;
  };
  struct Op {
    bool is_copy = true;
    std::byte* device = nullptr;
    const std::byte* host = nullptr;
    std::size_t bytes = 0;
    std::uint64_t hash = 0;
    std::uint64_t number = 0;  // copies are numbered from 1 in the order they were queued
    Event* event = nullptr;
    std::uint64_t generation = 0;
  };
  struct Stream {
    std::deque<Op> ops;
    bool running = false;  // its front op is being performed
    bool destroyed = false;
  };
  struct Allocation {
    std::size_t bytes = 0;
    std::vector<std::uint8_t> writes;  // per byte, saturating at 255 (device memory only)
  };

  void serve();
  void violation(std::string message);  // with mutex_ held
  // The allocation of `map` holding [p, p + bytes), or nullptr.
  static const std::pair<std::byte* const, Allocation>* find(
      const std::map<std::byte*, Allocation>& map, const std::byte* p, std::size_t bytes);
  bool reads_pending(const std::byte* begin, const std::byte* end, std::uint64_t* number) const;
  bool writes_pending(const std::byte* begin, const std::byte* end) const;
  bool idle() const;

  Options options_;
  mutable std::mutex mutex_;
  std::condition_variable work_;
  std::condition_variable done_;
  std::map<std::byte*, Allocation> device_;
  std::map<std::byte*, Allocation> pinned_;
  // Memory freed while a queued copy still used it: reported, and released only when the
  // device goes, so that the emulator's own copy never touches freed memory.
  std::vector<std::byte*> freed_in_use_;
  std::vector<std::unique_ptr<Stream>> streams_;
  std::vector<std::unique_ptr<Event>> events_;
  std::mt19937 random_;
  std::uint64_t queued_copies_ = 0;
  std::uint64_t pinned_now_ = 0;
  Report report_;
  PinnedCache pinned_cache_;
  bool stopping_ = false;
  std::thread engine_;
};

}  // namespace safetensors::detail
