#include "device/pipeline.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <new>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include "device/pinned_cache.hpp"
#include "error/messages.hpp"
#include "loader/progress.hpp"
#include "loader/run.hpp"
#include "safetensors/cast.hpp"
#include "safetensors/error.hpp"

namespace safetensors::detail {
namespace {

using Clock = std::chrono::steady_clock;

// Converting reads land in a per-worker bounce buffer small enough to stay in cache while it
// is cast into the slot (as the host loader does, loader/run.cpp).
constexpr std::size_t convert_block = std::size_t{1} << 20;
// O_DIRECT reads go through the bounce buffer in blocks of this size.
constexpr std::size_t direct_block = std::size_t{8} << 20;
// A slot with less room than this left is sent rather than filled with a sliver.
constexpr std::size_t min_chunk = std::size_t{64} << 10;
constexpr std::size_t min_slot = std::size_t{64} << 10;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::int64_t nanoseconds_since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
}

std::string origin(const Checkpoint& checkpoint) {
  if (!checkpoint.index_path().empty()) return checkpoint.index_path().string();
  if (!checkpoint.files().empty()) return checkpoint.files().front().name();
  return "checkpoint";
}

struct Slot {
  std::byte* data = nullptr;
  std::byte* staging = nullptr;  // its region of device staging memory, for device casts
  DeviceEvent event = nullptr;
  bool pending = false;  // copies out of it were queued behind `event`
};

// Thrown inside a worker when the ring stops because another worker failed.
struct Stopped {};

// The free slots, oldest first (their copies are the likeliest to be done).
class Ring {
 public:
  void put(Slot* slot) {
    {
      std::lock_guard lock(mutex_);
      free_.push_back(slot);
    }
    changed_.notify_one();
  }

  Slot* take() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return stopped_ || !free_.empty(); });
    if (stopped_) throw Stopped{};
    Slot* slot = free_.front();
    free_.pop_front();
    return slot;
  }

  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopped_ = true;
    }
    changed_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Slot*> free_;
  bool stopped_ = false;
};

// Ends the device's direct reads of one load's files when it goes (DeviceApi::end_direct_reads).
struct EndDirectReads {
  explicit EndDirectReads(DeviceApi& d) : device(d) {}
  EndDirectReads(const EndDirectReads&) = delete;
  EndDirectReads& operator=(const EndDirectReads&) = delete;
  ~EndDirectReads() { device.end_direct_reads(); }
  DeviceApi& device;
};

// Device resources of one load; the destructor waits for every queued copy and cast before
// the pinned memory they read is freed or kept for the next load, and the device staging
// memory they use is freed.
class Resources {
 public:
  // `keep`: give the pinned memory to the device's cache at the end when it is at most
  // `keep_limit` bytes, rather than free it.
  Resources(DeviceApi& device, bool keep, std::size_t keep_limit)
      : device_(device), keep_(keep), keep_limit_(keep_limit) {}
  Resources(const Resources&) = delete;
  Resources& operator=(const Resources&) = delete;

  ~Resources() {
    // A stream that cannot be synchronized may still have copies out of the ring queued:
    // its memory is then freed as before, never handed to another load.
    bool idle = true;
    for (DeviceStream stream : streams) {
      try {
        device_.synchronize(stream);
      } catch (...) {  // an earlier error is being reported
        idle = false;
      }
    }
    for (Slot& slot : slots) {
      if (slot.event != nullptr) device_.destroy_event(slot.event);
    }
    for (DeviceStream stream : streams) device_.destroy_stream(stream);
    if (staging != nullptr) device_.free(staging);
    if (pinned == nullptr) return;
    PinnedCache* cache = device_.pinned_cache();
    if (cache != nullptr && keep_ && idle && pinned_bytes_ <= keep_limit_) {
      device_.staging_kept(pinned, pinned_bytes_);
      device_.free_pinned(cache->keep({pinned, pinned_bytes_}).data);
    } else {
      device_.free_pinned(pinned);
    }
  }

  // At least `bytes` of pinned memory in `pinned`: the block an earlier load kept when it is
  // large enough, else a new one. A kept block too small is freed first, so that one load
  // never holds two.
  void acquire_pinned(std::size_t bytes, DeviceLoadStats& stats) {
    if (PinnedCache* cache = device_.pinned_cache(); cache != nullptr) {
      const PinnedCache::Block kept = cache->take();
      if (kept.data != nullptr && kept.bytes >= bytes) {
        pinned = kept.data;
        pinned_bytes_ = kept.bytes;
        stats.pinned_reused = true;
        return;
      }
      device_.free_pinned(kept.data);
    }
    const Clock::time_point start = Clock::now();
    pinned = device_.allocate_pinned(bytes);
    pinned_bytes_ = bytes;
    stats.pinned_alloc_seconds = seconds_since(start);
  }

  std::byte* pinned = nullptr;
  std::byte* staging = nullptr;  // device memory, as much as the pinned slots' (device casts)
  std::vector<Slot> slots;
  std::vector<DeviceStream> streams;

 private:
  DeviceApi& device_;
  bool keep_;
  std::size_t keep_limit_;
  std::size_t pinned_bytes_ = 0;
};

struct Totals {
  std::atomic<std::uint64_t> bytes_read{0};
  std::atomic<std::uint64_t> bytes_copied{0};
  std::atomic<std::uint64_t> copies{0};
  std::atomic<std::uint64_t> casts{0};
  std::atomic<std::uint64_t> bytes_cast_on_device{0};
  std::atomic<std::uint64_t> bytes_staged{0};
  std::atomic<std::uint64_t> bytes_cast_on_host{0};
  std::atomic<std::int64_t> read_ns{0};
  std::atomic<std::int64_t> wait_ns{0};
  std::atomic<std::uint64_t> bytes_read_direct{0};
  std::atomic<std::uint64_t> direct_reads{0};
  // Bytes of pieces loaded as stored that went through the ring, and why the first did.
  std::atomic<std::uint64_t> bytes_ring_as_stored{0};
  std::mutex reason_mutex;
  std::string direct_refused;
};

struct Shared {
  DeviceApi& device;
  const LoadJob& job;
  Ring& ring;
  std::size_t slot_bytes;
  const PipelineFaults& faults;
  LoadProgress& progress;
  Totals& totals;
  // Per piece of the job: converted on the device (staged as stored).
  const std::vector<char>& cast_on_device;
  // Per piece of the job: read from its file straight into device memory.
  const std::vector<char>& direct;
  const std::vector<DeviceStream>& streams;
};

// One copy out of a slot: `length` bytes at `at` in the slot to `dest` on the device; or, when
// `cast`, to the slot's device staging region at `at`, then converted from `from` into `to` at
// `dest` by a kernel.
struct Copy {
  std::size_t at;
  std::byte* dest;
  std::size_t length;
  bool cast = false;
  Dtype from = Dtype::U8;
  Dtype to = Dtype::U8;

  // Destination bytes.
  std::size_t written() const {
    return cast ? length / (dtype_bits(from) / 8) * (dtype_bits(to) / 8) : length;
  }
};

class Worker {
 public:
  Worker(Shared& shared, DeviceStream stream) : s_(shared), stream_(stream) {}
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  ~Worker() {
    // A slot still held after an error goes back unsent (nothing of it was queued).
    if (slot_ != nullptr) s_.ring.put(slot_);
  }

  void run_item(std::size_t item) {
    for (std::size_t p = s_.job.item_begin[item]; p < s_.job.item_begin[item + 1]; ++p) {
      const LoadPiece& piece = s_.job.pieces[p];
      if (s_.direct[p] == 0 || !read_direct(piece)) {
        if (piece.from == piece.to) {
          s_.totals.bytes_ring_as_stored.fetch_add(piece.length, std::memory_order_relaxed);
        }
        run_piece(piece, s_.cast_on_device[p] != 0);
      }
      s_.progress.add(piece.dest_length);
    }
  }

  // Queues the copies of the slot being filled, records its event and frees it for reuse.
  void send() {
    if (slot_ == nullptr) return;
    if (copies_.empty()) {
      s_.ring.put(std::exchange(slot_, nullptr));
      return;
    }
    Slot* slot = std::exchange(slot_, nullptr);
    // Should queueing fail, the slot stays out of the ring: copies out of it may be queued,
    // and the load ends in an error, after which every stream is synchronized.
    std::uint64_t copied = 0;
    for (const Copy& copy : copies_) {
      copied += copy.length;
      if (!copy.cast) {
        s_.device.copy_async(copy.dest, slot->data + copy.at, copy.length, stream_);
        continue;
      }
      // The kernel follows its staging copy on the same stream and precedes the slot's event,
      // so the slot and its staging region are refilled only once the kernel is done.
      std::byte* staged = slot->staging + copy.at;
      const std::size_t count = copy.length / (dtype_bits(copy.from) / 8);
      if (s_.faults.cast_before_copy) {
        s_.device.cast_async(copy.from, staged, copy.to, copy.dest, count, cast_stream());
        s_.device.copy_async(staged, slot->data + copy.at, copy.length, stream_);
      } else {
        s_.device.copy_async(staged, slot->data + copy.at, copy.length, stream_);
        s_.device.cast_async(copy.from, staged, copy.to, copy.dest, count, cast_stream());
      }
      s_.totals.casts.fetch_add(1, std::memory_order_relaxed);
      s_.totals.bytes_cast_on_device.fetch_add(copy.written(), std::memory_order_relaxed);
      s_.totals.bytes_staged.fetch_add(copy.length, std::memory_order_relaxed);
    }
    s_.device.record(slot->event, stream_);
    slot->pending = true;
    s_.totals.copies.fetch_add(copies_.size(), std::memory_order_relaxed);
    s_.totals.bytes_copied.fetch_add(copied, std::memory_order_relaxed);
    copies_.clear();
    used_ = 0;
    s_.ring.put(slot);
  }

 private:
  void acquire() {
    const Clock::time_point start = Clock::now();
    Slot* slot = s_.ring.take();
    if (slot->pending && !s_.faults.skip_slot_wait) {
      try {
        s_.device.wait(slot->event);
      } catch (...) {
        s_.ring.put(slot);
        throw;
      }
    }
    slot->pending = false;
    slot_ = slot;
    s_.totals.wait_ns.fetch_add(nanoseconds_since(start), std::memory_order_relaxed);
  }

  // A piece loaded as stored, from its file straight into device memory (no slot, no copy);
  // false when the device refuses its file, nothing written, for the ring to load it.
  bool read_direct(const LoadPiece& piece) {
    const BulkReader& shard = *s_.job.shards[piece.shard];
    const DirectFile file{shard.descriptor(), shard.direct_descriptor(), &shard.name()};
    std::byte* dest = piece.dest + s_.faults.direct_read_shift;
    const std::size_t length = static_cast<std::size_t>(piece.length);
    std::string why;
    const Clock::time_point start = Clock::now();
    bool read = s_.device.read_direct(file, piece.offset, dest, length, why);
    if (read && s_.faults.direct_read_twice)
      read = s_.device.read_direct(file, piece.offset, dest, length, why);
    s_.totals.read_ns.fetch_add(nanoseconds_since(start), std::memory_order_relaxed);
    if (!read) {
      std::lock_guard lock(s_.totals.reason_mutex);
      if (s_.totals.direct_refused.empty()) s_.totals.direct_refused = why;
      return false;
    }
    shard.count_external(piece.length);
    s_.totals.bytes_read.fetch_add(piece.length, std::memory_order_relaxed);
    s_.totals.bytes_read_direct.fetch_add(piece.length, std::memory_order_relaxed);
    s_.totals.direct_reads.fetch_add(1, std::memory_order_relaxed);
    return true;
  }

  // The stream device casts go on: the worker's, but for the fault that breaks their order.
  DeviceStream cast_stream() const {
    if (!s_.faults.cast_on_other_stream) return stream_;
    const auto it = std::find(s_.streams.begin(), s_.streams.end(), stream_);
    const std::size_t index = static_cast<std::size_t>(it - s_.streams.begin());
    return s_.streams[(index + 1) % s_.streams.size()];
  }

  // A piece cast on the host fills the slot with converted elements; one cast on the device
  // (`on_device`) fills it with its source elements, each aligned to its size (the slot's
  // offset is its device staging region's, where the kernel reads them).
  void run_piece(const LoadPiece& piece, bool on_device) {
    const bool converts = piece.from != piece.to;
    const bool cast_here = converts && !on_device;
    const std::uint64_t in_width = converts ? dtype_bits(piece.from) / 8 : 1;
    const std::uint64_t out_width = converts ? dtype_bits(piece.to) / 8 : 1;
    const std::uint64_t slot_width = cast_here ? out_width : in_width;
    std::uint64_t at = 0;  // source bytes of the piece done
    while (at < piece.length) {
      if (slot_ == nullptr) acquire();
      if (on_device)
        used_ = std::min<std::size_t>((used_ + in_width - 1) / in_width * in_width, s_.slot_bytes);
      const std::uint64_t room = s_.slot_bytes - used_;
      const std::uint64_t rest = (piece.length - at) / in_width * slot_width;
      if (room < slot_width || (room < min_chunk && room < rest)) {
        send();
        continue;
      }
      const std::uint64_t n = std::min(piece.length - at, room / slot_width * in_width);
      const std::size_t slot_n = static_cast<std::size_t>(n / in_width * slot_width);
      std::byte* into = slot_->data + used_;
      s_.device.staging_write(into, slot_n);
      const Clock::time_point start = Clock::now();
      fetch(piece, at, static_cast<std::size_t>(n), into, cast_here);
      s_.totals.read_ns.fetch_add(nanoseconds_since(start), std::memory_order_relaxed);
      s_.totals.bytes_read.fetch_add(n, std::memory_order_relaxed);
      if (cast_here) s_.totals.bytes_cast_on_host.fetch_add(slot_n, std::memory_order_relaxed);
      std::byte* dest = piece.dest + at / in_width * out_width;
      Copy copy{used_, dest, slot_n, on_device, piece.from, piece.to};
      if (!copies_.empty() && copies_.back().cast == copy.cast &&
          (!copy.cast || (copies_.back().from == copy.from && copies_.back().to == copy.to)) &&
          copies_.back().at + copies_.back().length == used_ &&
          copies_.back().dest + copies_.back().written() == dest) {
        copies_.back().length += slot_n;  // continues the previous copy on both sides
      } else {
        copies_.push_back(copy);
      }
      used_ += slot_n;
      at += n;
      if (used_ == s_.slot_bytes) send();
    }
  }

  // Source bytes [at, at + n) of `piece` into `into`, converted when `converts`.
  void fetch(const LoadPiece& piece, std::uint64_t at, std::size_t n, std::byte* into,
             bool converts) {
    const BulkReader& shard = *s_.job.shards[piece.shard];
    const std::uint64_t offset = piece.offset + at;
    const bool mapped = s_.job.method == LoadMethod::mmap && shard.mapping() != nullptr;
    if (mapped) shard.prefetch(offset, n);
    if (!converts && !mapped && s_.job.method != LoadMethod::direct) {
      shard.read(offset, {into, n});  // the kernel copies straight into pinned memory
      return;
    }
    const std::size_t in_width = converts ? dtype_bits(piece.from) / 8 : 1;
    const std::size_t out_width = converts ? dtype_bits(piece.to) / 8 : 1;
    const std::size_t block =
        mapped ? n : (s_.job.method == LoadMethod::direct ? direct_block : convert_block);
    const std::size_t step = std::max<std::size_t>(block / in_width, 1) * in_width;
    for (std::size_t done = 0; done < n; done += step) {
      const std::size_t length = std::min(step, n - done);
      std::span<const std::byte> source;
      if (mapped) {
        source = {shard.mapping() + offset + done, length};
      } else if (s_.job.method == LoadMethod::direct) {
        source = shard.read_direct(offset + done, length, bounce(direct_block));
      } else {
        const std::span<std::byte> buffer = bounce(convert_block).first(length);
        shard.read(offset + done, buffer);
        source = buffer;
      }
      std::byte* out = into + done / in_width * out_width;
      if (converts) {
        cast(piece.from, source, piece.to, {out, length / in_width * out_width});
      } else {
        std::memcpy(out, source.data(), length);
      }
    }
  }

  // Room for a block plus the alignment slack O_DIRECT adds at both ends.
  std::span<std::byte> bounce(std::size_t block) {
    const std::size_t size = block + 2 * direct_alignment;
    if (bounce_.size() < size) {
      bounce_storage_.reset(
          static_cast<std::byte*>(::operator new[](size, std::align_val_t{direct_alignment})));
      bounce_ = {bounce_storage_.get(), size};
    }
    return bounce_;
  }

  struct AlignedFree {
    void operator()(std::byte* p) const noexcept {
      ::operator delete[](p, std::align_val_t{direct_alignment});
    }
  };

  Shared& s_;
  DeviceStream stream_;
  Slot* slot_ = nullptr;
  std::size_t used_ = 0;
  std::vector<Copy> copies_;
  std::unique_ptr<std::byte[], AlignedFree> bounce_storage_;
  std::span<std::byte> bounce_;
};

}  // namespace

RingShape ring_shape(const DeviceLoadOptions& options, unsigned threads,
                     std::uint64_t total_bytes) {
  RingShape shape;
  const std::size_t budget = std::max(options.max_pinned_bytes, 2 * min_slot);
  shape.slot_bytes = std::clamp(options.slot_bytes, min_slot, budget / 2);
  shape.slot_bytes = shape.slot_bytes / 4096 * 4096;
  const unsigned wanted = options.slots != 0 ? options.slots : std::max(4u, 3 * threads);
  const std::uint64_t fit = budget / shape.slot_bytes;
  // No more slots than the load can fill at once: each worker holds one, plus a full ring's
  // worth of the data.
  const std::uint64_t useful = total_bytes / shape.slot_bytes + threads + 1;
  shape.slots = static_cast<unsigned>(
      std::max<std::uint64_t>(2, std::min<std::uint64_t>({wanted, fit, useful})));
  shape.streams = std::clamp(options.streams, 1u, shape.slots);
  return shape;
}

std::uint64_t release_pinned_staging(DeviceApi& device) {
  PinnedCache* cache = device.pinned_cache();
  if (cache == nullptr) return 0;
  const PinnedCache::Block block = cache->take();
  device.free_pinned(block.data);
  return block.bytes;
}

DeviceLoadStats run_device_load(DeviceApi& device, const Checkpoint& checkpoint,
                                const LoadPlan& plan, std::byte* device_buffer,
                                std::uint64_t device_bytes, const DeviceLoadOptions& options,
                                const PipelineFaults& faults) {
  const Clock::time_point start = Clock::now();
  if (device_bytes < plan.buffer_size) {
    fail(ErrorCode::invalid_argument, origin(checkpoint),
         "the device buffer holds " + std::to_string(device_bytes) + " bytes, the plan needs " +
             std::to_string(plan.buffer_size));
  }
  if (device_buffer == nullptr && plan.buffer_size != 0) {
    fail(ErrorCode::invalid_argument, origin(checkpoint), "the device buffer is null");
  }
  // Direct reads (GPUDirect Storage): decided before the job, whose shards then open an
  // O_DIRECT descriptor as well, as GDS wants.
  bool use_direct = false;
  std::string direct_reason;
  if (options.direct == DirectReads::off) {
    direct_reason = "direct reads are off (DirectReads::off)";
  } else if (device.can_read_direct(options.direct == DirectReads::on, direct_reason)) {
    use_direct = true;
  } else if (options.direct == DirectReads::on) {
    fail(
        ErrorCode::device, origin(checkpoint),
        "direct reads into device memory (GPUDirect Storage) were asked for, but " + direct_reason);
  }
  LoadOptions load_options;
  load_options.threads = options.threads;
  load_options.method = options.method;
  const LoadJob job =
      make_load_job(checkpoint, plan, {device_buffer, static_cast<std::size_t>(plan.buffer_size)},
                    load_options, use_direct);
  // Declared after the job, so run before the job's shards close their descriptors.
  const EndDirectReads end_direct_reads{device};
  const std::size_t items = job.item_begin.empty() ? 0 : job.item_begin.size() - 1;
  const unsigned threads =
      static_cast<unsigned>(std::clamp<std::size_t>(items, 1, std::max(job.threads, 1u)));

  // Which pieces are read directly: those loaded as stored from a shard with a descriptor.
  // The rest go through the ring, which is sized for them alone.
  std::vector<char> direct(job.pieces.size(), 0);
  std::uint64_t ring_bytes = 0;
  for (std::size_t p = 0; p < job.pieces.size(); ++p) {
    const LoadPiece& piece = job.pieces[p];
    if (use_direct && piece.from == piece.to) {
      if (job.shards[piece.shard]->descriptor() >= 0) {
        direct[p] = 1;
        continue;
      }
      direct_reason = "a shard is not a file (" + job.shards[piece.shard]->name() +
                      " has no descriptor to read from)";
    }
    ring_bytes += piece.dest_length;
  }
  const bool any_direct = std::find(direct.begin(), direct.end(), 1) != direct.end();
  const RingShape shape = ring_shape(options, threads, any_direct ? ring_bytes : job.total_bytes);

  // Where each converting piece is cast: on the device when asked for (or, automatic, when
  // the device can) and its destination is aligned to its element, as kernels need.
  std::vector<char> cast_on_device(job.pieces.size(), 0);
  bool any_on_device = false;
  std::string host_reason;
  for (std::size_t p = 0; p < job.pieces.size(); ++p) {
    const LoadPiece& piece = job.pieces[p];
    if (piece.from == piece.to) continue;
    if (options.cast_on == CastOn::host) {
      host_reason = "the load asked for host casts (CastOn::host)";
      continue;
    }
    if (options.cast_on == CastOn::automatic && dtype_bits(piece.from) > dtype_bits(piece.to)) {
      // Cast on the host, a narrowing cast sends its smaller results over the bus; on the
      // device, its larger sources. The bus is the bound the pipeline is built to reach.
      host_reason = "a narrowing cast (" + std::string(dtype_name(piece.from)) + " to " +
                    std::string(dtype_name(piece.to)) +
                    ") is done on the host, which sends the "
                    "device fewer bytes";
      continue;
    }
    std::string why;
    if (!device.can_cast(piece.from, piece.to, why)) {
      if (options.cast_on == CastOn::device) {
        fail(ErrorCode::device, origin(checkpoint),
             "casts on the device were asked for, but " + device.describe() + " cannot convert " +
                 std::string(dtype_name(piece.from)) + " to " + std::string(dtype_name(piece.to)) +
                 ": " + why);
      }
      host_reason = why;
      continue;
    }
    if (reinterpret_cast<std::uintptr_t>(piece.dest) % (dtype_bits(piece.to) / 8) != 0) {
      host_reason = "a destination is not aligned to its element size";
      continue;
    }
    cast_on_device[p] = 1;
    any_on_device = true;
  }

  DeviceLoadStats stats;
  stats.threads = threads;
  stats.slots = shape.slots;
  stats.pinned_bytes = std::uint64_t{shape.slots} * shape.slot_bytes;
  if (items == 0) {
    if (options.progress) options.progress(0, 0);
    stats.seconds = seconds_since(start);
    return stats;
  }

  // The whole ring at once, not slot by slot as workers first need them: with the ring
  // kept between loads (PinnedCache) only a process's first load pins memory, and one
  // allocation keeps the kept block a single one.
  Resources resources(device, options.keep_pinned, options.max_pinned_bytes);
  resources.acquire_pinned(static_cast<std::size_t>(stats.pinned_bytes), stats);
  Ring ring;
  resources.slots.resize(shape.slots);
  for (unsigned i = 0; i < shape.slots; ++i) {
    resources.slots[i].data = resources.pinned + std::size_t{i} * shape.slot_bytes;
    resources.slots[i].event = device.create_event();
    ring.put(&resources.slots[i]);
  }
  for (unsigned i = 0; i < shape.streams; ++i) resources.streams.push_back(device.create_stream());

  if (any_on_device) {
    // One region per slot, at the slot's offset: a slot's staged bytes land at the same
    // offsets on the device, and are reused with the slot, after its event.
    try {
      resources.staging = device.allocate(static_cast<std::size_t>(stats.pinned_bytes));
    } catch (const Error& error) {
      if (options.cast_on == CastOn::device || error.code() != ErrorCode::device) throw;
      // The GPU's memory is taken (by the tensors, or a framework's cache of freed blocks):
      // the host casts instead, which needs no device memory beyond the tensors.
      host_reason = "no device memory was left to stage the casts on the device (" +
                    std::string(error.what()) + ")";
      std::fill(cast_on_device.begin(), cast_on_device.end(), 0);
      any_on_device = false;
    }
  }
  if (any_on_device) {
    stats.device_staging_bytes = stats.pinned_bytes;
    for (unsigned i = 0; i < shape.slots; ++i) {
      resources.slots[i].staging = resources.staging + std::size_t{i} * shape.slot_bytes;
    }
  }

  LoadProgress progress(options.progress, job.total_bytes);
  Totals totals;
  Shared shared{device,   job,    ring,           shape.slot_bytes, faults,
                progress, totals, cast_on_device, direct,           resources.streams};
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex error_mutex;
  std::exception_ptr error;

  auto work = [&](unsigned index) {
    try {
      if (index != 0) device.bind_thread();
      Worker worker(shared, resources.streams[index % resources.streams.size()]);
      while (!failed.load(std::memory_order_relaxed)) {
        const std::size_t item = next.fetch_add(1, std::memory_order_relaxed);
        if (item >= items) break;
        worker.run_item(item);
      }
      if (!failed.load(std::memory_order_relaxed)) worker.send();
    } catch (const Stopped&) {
      // another worker failed; its error is reported
    } catch (...) {
      {
        std::lock_guard lock(error_mutex);
        if (!error) error = std::current_exception();
      }
      failed.store(true, std::memory_order_relaxed);
      ring.stop();
    }
  };
  {
    std::vector<std::jthread> helpers;
    helpers.reserve(threads - 1);
    for (unsigned i = 1; i < threads; ++i) helpers.emplace_back(work, i);
    work(0);
  }                                          // joins the helpers
  if (error) std::rethrow_exception(error);  // ~Resources waits for the queued copies

  const Clock::time_point drain = Clock::now();
  for (DeviceStream stream : resources.streams) device.synchronize(stream);
  stats.drain_seconds = seconds_since(drain);
  stats.bytes_read = totals.bytes_read.load();
  stats.bytes_copied = totals.bytes_copied.load();
  stats.copies = totals.copies.load();
  stats.casts = totals.casts.load();
  stats.bytes_cast_on_device = totals.bytes_cast_on_device.load();
  stats.bytes_staged_for_device_casts = totals.bytes_staged.load();
  stats.bytes_cast_on_host = totals.bytes_cast_on_host.load();
  if (stats.bytes_cast_on_host != 0) stats.host_cast_reason = host_reason;
  stats.bytes_read_direct = totals.bytes_read_direct.load();
  stats.direct_reads = totals.direct_reads.load();
  if (totals.bytes_ring_as_stored.load() != 0) {
    // A refusal seen while loading says more than the reason decided before.
    stats.direct_reason = totals.direct_refused.empty() ? direct_reason : totals.direct_refused;
  }
  stats.read_seconds = static_cast<double>(totals.read_ns.load()) * 1e-9;
  stats.slot_wait_seconds = static_cast<double>(totals.wait_ns.load()) * 1e-9;
  stats.seconds = seconds_since(start);
  return stats;
}

}  // namespace safetensors::detail
