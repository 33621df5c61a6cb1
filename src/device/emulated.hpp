// A device made of host memory, for running the device pipeline without a GPU. Copies are
// performed later, by the emulator's own thread (optionally slowed down, streams interleaved
// at random), as a GPU's copy engine would; and everything is checked: a copy reads only
// pinned memory and writes only inside a device allocation, the host never writes staging
// bytes that a queued copy has yet to read, pinned memory is not freed (nor kept for the next
// load) under a queued copy, and every device byte ends up written exactly once. Casts run the
// device kernels' element operations (device/cast_ops.hpp) in stream order, like copies, and
// are checked too: every source byte was staged by a copy queued before the cast on its stream
// (or already done on another), and read by one cast only; no copy overwrites bytes that a
// cast queued on another stream has yet to read; both sides are aligned to their elements.
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
#include <set>
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
    /// Whether the device converts dtypes (cast_async); off, it behaves as a device whose
    /// kernels could not be loaded.
    bool casts = true;
    /// Whether the device reads files into its memory directly (read_direct, by pread, as
    /// GPUDirect Storage would by DMA); off by default, so that loads go through the ring.
    bool direct_reads = false;
    /// Direct reads are on but every file is refused (read_direct returns false), as cuFile
    /// refuses to register a file on an unsupported file system.
    bool refuse_direct_files = false;
    /// When non-zero, allocate() throws Error(device) rather than have more device bytes
    /// than this live at once, as cudaMalloc does when the GPU's memory is taken.
    std::uint64_t device_memory = 0;
  };

  struct Report {
    std::uint64_t copies = 0;  // copies performed
    std::uint64_t bytes_copied = 0;
    std::uint64_t casts = 0;         // casts performed
    std::uint64_t bytes_cast = 0;    // bytes the casts wrote
    std::uint64_t direct_reads = 0;  // read_direct calls that wrote device memory
    std::uint64_t bytes_read_direct = 0;
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
  bool can_cast(Dtype from, Dtype to, std::string& why) override;
  void cast_async(Dtype from, const std::byte* device_in, Dtype to, std::byte* device_out,
                  std::size_t count, DeviceStream stream) override;
  /// Direct reads are checked like copies: inside one device allocation, no queued copy or
  /// cast writing the same bytes, and counted toward "every device byte written once".
  bool can_read_direct(bool required, std::string& why) override;
  bool read_direct(const DirectFile& file, std::uint64_t offset, std::byte* dest, std::size_t bytes,
                   std::string& why) override;
  /// Files read directly count as registered (as cuFile's handles) until this is called;
  /// check() reports any still registered.
  void end_direct_reads() noexcept override;
  void staging_write(const std::byte* host, std::size_t bytes) override;
  void staging_kept(const std::byte* host, std::size_t bytes) noexcept override;

 private:
  struct Event {
    std::uint64_t recorded = 0;
    std::uint64_t completed = 0;
  };
  struct Stream;
  enum class Kind { copy, record, cast };
  struct Op {
    Kind kind = Kind::copy;
    std::byte* device = nullptr;      // what a copy or cast writes
    const std::byte* host = nullptr;  // what a copy reads
    std::size_t bytes = 0;            // written
    std::uint64_t hash = 0;
    // Copies are numbered from 1 in the order they were queued, and so are casts.
    std::uint64_t number = 0;
    Event* event = nullptr;
    std::uint64_t generation = 0;
    // A cast: `count` elements of `from` at `source` (device memory) into `to` at `device`.
    const std::byte* source = nullptr;
    std::size_t source_bytes = 0;
    std::size_t count = 0;
    Dtype from = Dtype::U8;
    Dtype to = Dtype::U8;
  };
  // Where each copy was queued and whether it was performed, by copy number - 1.
  struct CopyState {
    const Stream* stream = nullptr;
    bool done = false;
  };
  struct Stream {
    std::deque<Op> ops;
    bool running = false;  // its front op is being performed
    bool destroyed = false;
  };
  // Bytes [begin, end) of a device allocation, as the last copy queued into them left them.
  struct Staged {
    std::size_t end = 0;
    std::uint64_t copy = 0;  // its number
    bool cast_read = false;  // a cast has read these bytes since
  };
  struct Allocation {
    std::size_t bytes = 0;
    std::vector<std::uint8_t> writes;  // per byte, saturating at 255 (device memory only)
    // Device memory: disjoint ranges by their first offset, each written last by one copy.
    std::map<std::size_t, Staged> staged;
  };

  void serve();
  void violation(std::string message);  // with mutex_ held
  // The allocation of `map` holding [p, p + bytes), or nullptr.
  static const std::pair<std::byte* const, Allocation>* find(
      const std::map<std::byte*, Allocation>& map, const std::byte* p, std::size_t bytes);
  bool reads_pending(const std::byte* begin, const std::byte* end, std::uint64_t* number) const;
  bool writes_pending(const std::byte* begin, const std::byte* end) const;
  // A cast queued on a stream other than `stream` and not yet performed that reads device
  // bytes in [begin, end); its number goes to `number`.
  bool cast_reads_pending(const std::byte* begin, const std::byte* end, const Stream* stream,
                          std::uint64_t* number) const;
  // Checks at queue time that the source of cast `number` on `stream` was staged for it.
  void check_cast_source(Allocation& allocation, std::size_t at, std::size_t bytes,
                         const Stream* stream, std::uint64_t number);
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
  std::uint64_t queued_casts_ = 0;
  std::vector<CopyState> copy_states_;
  std::uint64_t pinned_now_ = 0;
  std::uint64_t device_now_ = 0;
  std::set<std::string> direct_files_;  // read directly since the last end_direct_reads
  Report report_;
  PinnedCache pinned_cache_;
  bool stopping_ = false;
  std::thread engine_;
};

}  // namespace safetensors::detail
