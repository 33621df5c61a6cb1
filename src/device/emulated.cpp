#include "device/emulated.hpp"

#include <algorithm>
#include <cstring>
#include <new>
#include <utility>

#include "device/device_cast.hpp"
#include "error/messages.hpp"
#include "io/posix.hpp"
#include "safetensors/error.hpp"

namespace safetensors::detail {
namespace {

// cudaMalloc's alignment.
constexpr std::size_t device_alignment = 256;
constexpr std::size_t kept_violations = 100;

std::byte* raw_allocate(std::size_t bytes) {
  return static_cast<std::byte*>(
      ::operator new[](std::max<std::size_t>(bytes, 1), std::align_val_t{device_alignment}));
}

void raw_free(std::byte* p) noexcept {
  ::operator delete[](p, std::align_val_t{device_alignment});
}

// Enough to tell whether staging bytes changed between queueing a copy and performing it.
std::uint64_t hash_bytes(const std::byte* p, std::size_t n) {
  std::uint64_t h = 0x9e3779b97f4a7c15u ^ n;
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t word;
    std::memcpy(&word, p + i, 8);
    h = (h ^ word) * 0x100000001b3u;
    h ^= h >> 29;
  }
  for (; i < n; ++i) h = (h ^ static_cast<std::uint64_t>(p[i])) * 0x100000001b3u;
  return h;
}

std::string range(const std::byte* base, const std::byte* p, std::size_t n) {
  std::string out = "[";
  out += std::to_string(p - base);
  out += ", ";
  out += std::to_string(static_cast<std::size_t>(p - base) + n);
  out += ")";
  return out;
}

// Splits the range of `staged` that holds offset `at` inside it in two at `at`.
template <class Map>
void split_at(Map& staged, std::size_t at) {
  auto it = staged.upper_bound(at);
  if (it == staged.begin()) return;
  --it;
  if (it->first < at && at < it->second.end) {
    auto tail = it->second;
    it->second.end = at;
    staged.emplace(at, tail);
  }
}

}  // namespace

EmulatedDevice::EmulatedDevice() : EmulatedDevice(Options{}) {}

EmulatedDevice::EmulatedDevice(Options options)
    : options_(options), random_(options.seed), engine_([this] { serve(); }) {}

EmulatedDevice::~EmulatedDevice() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
  engine_.join();
  for (auto& [p, allocation] : device_) raw_free(p);
  for (auto& [p, allocation] : pinned_) raw_free(p);
  for (std::byte* p : freed_in_use_) raw_free(p);
}

void EmulatedDevice::violation(std::string message) {
  ++report_.violation_count;
  if (report_.violations.size() < kept_violations) report_.violations.push_back(std::move(message));
}

const std::pair<std::byte* const, EmulatedDevice::Allocation>* EmulatedDevice::find(
    const std::map<std::byte*, Allocation>& map, const std::byte* p, std::size_t bytes) {
  auto it = map.upper_bound(const_cast<std::byte*>(p));
  if (it == map.begin()) return nullptr;
  --it;
  const std::size_t offset = static_cast<std::size_t>(p - it->first);
  if (offset > it->second.bytes || bytes > it->second.bytes - offset) return nullptr;
  return &*it;
}

bool EmulatedDevice::reads_pending(const std::byte* begin, const std::byte* end,
                                   std::uint64_t* number) const {
  for (const auto& stream : streams_) {
    for (const Op& op : stream->ops) {
      if (op.kind == Kind::copy && op.host < end && begin < op.host + op.bytes) {
        if (number != nullptr) *number = op.number;
        return true;
      }
    }
  }
  return false;
}

bool EmulatedDevice::writes_pending(const std::byte* begin, const std::byte* end) const {
  for (const auto& stream : streams_) {
    for (const Op& op : stream->ops) {
      if (op.kind != Kind::record && op.device < end && begin < op.device + op.bytes) return true;
    }
  }
  return false;
}

bool EmulatedDevice::cast_reads_pending(const std::byte* begin, const std::byte* end,
                                        const Stream* stream, std::uint64_t* number) const {
  for (const auto& s : streams_) {
    if (s.get() == stream) continue;
    for (const Op& op : s->ops) {
      if (op.kind == Kind::cast && op.source < end && begin < op.source + op.source_bytes) {
        if (number != nullptr) *number = op.number;
        return true;
      }
    }
  }
  return false;
}

bool EmulatedDevice::idle() const {
  return std::all_of(streams_.begin(), streams_.end(),
                     [](const auto& stream) { return stream->ops.empty(); });
}

// The copy engine: serves one queued op at a time, from a stream chosen at random among
// those with work, so streams interleave while each keeps its order. An op stays at the
// front of its stream's queue while it runs, so it counts as pending until it is done.
void EmulatedDevice::serve() {
  std::unique_lock lock(mutex_);
  for (;;) {
    work_.wait(lock, [&] { return stopping_ || !idle(); });
    if (idle()) return;  // stopping with nothing left
    std::vector<Stream*> ready;
    for (const auto& stream : streams_) {
      if (!stream->ops.empty()) ready.push_back(stream.get());
    }
    Stream& stream =
        *ready[std::uniform_int_distribution<std::size_t>(0, ready.size() - 1)(random_)];
    stream.running = true;
    const Op op = stream.ops.front();
    if (op.kind == Kind::copy) {
      lock.unlock();
      if (options_.copy_delay.count() > 0) std::this_thread::sleep_for(options_.copy_delay);
      const std::uint64_t hash = hash_bytes(op.host, op.bytes);
      std::memcpy(op.device, op.host, op.bytes);
      lock.lock();
      if (hash != op.hash) {
        violation("copy " + std::to_string(op.number) + " of " + std::to_string(op.bytes) +
                  " bytes: the staging bytes changed between queueing the copy and performing "
                  "it (a slot was refilled before its copy completed)");
      }
      if (const auto* found = find(device_, op.device, op.bytes)) {
        auto& writes = const_cast<Allocation&>(found->second).writes;
        const std::size_t at = static_cast<std::size_t>(op.device - found->first);
        for (std::size_t i = at; i < at + op.bytes; ++i) {
          if (writes[i] != 255) ++writes[i];
        }
      }
      ++report_.copies;
      report_.bytes_copied += op.bytes;
      copy_states_[op.number - 1].done = true;
    } else if (op.kind == Kind::cast) {
      // The kernel, at the point of its stream where the GPU would run it, converting with
      // the kernels' own element operations.
      lock.unlock();
      if (options_.copy_delay.count() > 0) std::this_thread::sleep_for(options_.copy_delay);
      run_device_cast_on_host(op.from, op.source, op.to, op.device, op.count);
      lock.lock();
      if (const auto* found = find(device_, op.device, op.bytes)) {
        auto& writes = const_cast<Allocation&>(found->second).writes;
        const std::size_t at = static_cast<std::size_t>(op.device - found->first);
        for (std::size_t i = at; i < at + op.bytes; ++i) {
          if (writes[i] != 255) ++writes[i];
        }
      }
      ++report_.casts;
      report_.bytes_cast += op.bytes;
    } else {
      op.event->completed = std::max(op.event->completed, op.generation);
    }
    stream.ops.pop_front();
    stream.running = false;
    done_.notify_all();
  }
}

std::byte* EmulatedDevice::allocate(std::size_t bytes) {
  {
    std::lock_guard lock(mutex_);
    if (options_.device_memory != 0 && bytes > options_.device_memory - device_now_) {
      fail(ErrorCode::device, describe(),
           "cudaMalloc of " + std::to_string(bytes) + " bytes failed: out of memory (" +
               std::to_string(options_.device_memory - device_now_) + " bytes free)");
    }
    device_now_ += bytes;
  }
  std::byte* p = raw_allocate(bytes);
  std::lock_guard lock(mutex_);
  device_[p] = Allocation{bytes, std::vector<std::uint8_t>(bytes, 0), {}};
  return p;
}

void EmulatedDevice::free(std::byte* memory) noexcept {
  if (memory == nullptr) return;
  std::lock_guard lock(mutex_);
  const auto it = device_.find(memory);
  if (it == device_.end()) {
    violation("free of device memory that was not allocated");
    return;
  }
  const bool in_use = writes_pending(memory, memory + it->second.bytes) ||
                      cast_reads_pending(memory, memory + it->second.bytes, nullptr, nullptr);
  if (in_use) violation("device memory freed while a copy or cast using it was still queued");
  device_now_ -= it->second.bytes;
  device_.erase(it);
  if (in_use) {
    freed_in_use_.push_back(memory);
  } else {
    raw_free(memory);
  }
}

std::byte* EmulatedDevice::allocate_pinned(std::size_t bytes) {
  std::byte* p = raw_allocate(bytes);
  std::lock_guard lock(mutex_);
  pinned_[p] = Allocation{bytes, {}, {}};
  pinned_now_ += bytes;
  ++report_.pinned_allocations;
  report_.pinned_high_water = std::max(report_.pinned_high_water, pinned_now_);
  return p;
}

void EmulatedDevice::free_pinned(std::byte* memory) noexcept {
  if (memory == nullptr) return;
  std::lock_guard lock(mutex_);
  const auto it = pinned_.find(memory);
  if (it == pinned_.end()) {
    violation("free of pinned memory that was not allocated");
    return;
  }
  std::uint64_t number = 0;
  const bool in_use = reads_pending(memory, memory + it->second.bytes, &number);
  if (in_use) {
    violation("pinned memory freed while copy " + std::to_string(number) +
              " out of it was still queued");
  }
  pinned_now_ -= it->second.bytes;
  ++report_.pinned_frees;
  pinned_.erase(it);
  if (in_use) {
    freed_in_use_.push_back(memory);
  } else {
    raw_free(memory);
  }
}

DeviceStream EmulatedDevice::create_stream() {
  std::lock_guard lock(mutex_);
  streams_.push_back(std::make_unique<Stream>());
  return streams_.back().get();
}

void EmulatedDevice::destroy_stream(DeviceStream stream) noexcept {
  std::lock_guard lock(mutex_);
  auto* s = static_cast<Stream*>(stream);
  if (!s->ops.empty()) violation("stream destroyed with operations still queued");
  s->destroyed = true;
}

DeviceEvent EmulatedDevice::create_event() {
  std::lock_guard lock(mutex_);
  events_.push_back(std::make_unique<Event>());
  return events_.back().get();
}

void EmulatedDevice::destroy_event(DeviceEvent) noexcept {}

void EmulatedDevice::copy_async(std::byte* device, const std::byte* host, std::size_t bytes,
                                DeviceStream stream) {
  {
    std::lock_guard lock(mutex_);
    const std::uint64_t number = ++queued_copies_;
    copy_states_.push_back({static_cast<Stream*>(stream), false});
    if (options_.fail_copy != 0 && number == options_.fail_copy) {
      fail(ErrorCode::device, "emulated device",
           "copy " + std::to_string(number) + " refused (a fault injected by the test)");
    }
    auto* s = static_cast<Stream*>(stream);
    if (s->destroyed) violation("copy queued on a destroyed stream");
    if (find(pinned_, host, bytes) == nullptr) {
      violation("copy " + std::to_string(number) + " reads " + std::to_string(bytes) +
                " bytes of host memory that is not pinned staging memory");
    }
    const auto* target = find(device_, device, bytes);
    if (target == nullptr) {
      violation("copy " + std::to_string(number) + " writes " + std::to_string(bytes) +
                " bytes outside every device allocation");
      return;
    }
    std::uint64_t cast = 0;
    if (cast_reads_pending(device, device + bytes, s, &cast)) {
      violation("copy " + std::to_string(number) + " overwrites device bytes " +
                range(target->first, device, bytes) + " that cast " + std::to_string(cast) +
                ", queued on another stream, has yet to read (device staging reused before "
                "its cast completed)");
    }
    // What the copy will have written, for the casts that read it.
    auto& staged = const_cast<Allocation&>(target->second).staged;
    const std::size_t at = static_cast<std::size_t>(device - target->first);
    split_at(staged, at);
    split_at(staged, at + bytes);
    staged.erase(staged.lower_bound(at), staged.lower_bound(at + bytes));
    if (bytes != 0) staged.emplace(at, Staged{at + bytes, number, false});
    Op op;
    op.device = device;
    op.host = host;
    op.bytes = bytes;
    op.hash = hash_bytes(host, bytes);
    op.number = number;
    s->ops.push_back(op);
  }
  work_.notify_one();
}

void EmulatedDevice::record(DeviceEvent event, DeviceStream stream) {
  {
    std::lock_guard lock(mutex_);
    auto* e = static_cast<Event*>(event);
    auto* s = static_cast<Stream*>(stream);
    Op op;
    op.kind = Kind::record;
    op.event = e;
    op.generation = ++e->recorded;
    s->ops.push_back(op);
  }
  work_.notify_one();
}

void EmulatedDevice::wait(DeviceEvent event) {
  auto* e = static_cast<Event*>(event);
  std::unique_lock lock(mutex_);
  const std::uint64_t target = e->recorded;
  done_.wait(lock, [&] { return e->completed >= target; });
}

void EmulatedDevice::synchronize(DeviceStream stream) {
  auto* s = static_cast<Stream*>(stream);
  std::unique_lock lock(mutex_);
  done_.wait(lock, [&] { return s->ops.empty(); });
}

bool EmulatedDevice::can_cast(Dtype from, Dtype to, std::string& why) {
  if (!options_.casts) {
    why = "the emulated device was made without casts (Options::casts)";
    return false;
  }
  if (!device_cast_kind(from, to)) {
    why = "no device kernel converts " + std::string(dtype_name(from)) + " to " +
          std::string(dtype_name(to));
    return false;
  }
  return true;
}

void EmulatedDevice::check_cast_source(Allocation& allocation, std::size_t at, std::size_t bytes,
                                       const Stream* stream, std::uint64_t number) {
  const std::string cast = "cast " + std::to_string(number) + " reads device bytes [" +
                           std::to_string(at) + ", " + std::to_string(at + bytes) + ")";
  bool unwritten = false, stale = false, unordered = false;
  std::uint64_t other = 0;
  split_at(allocation.staged, at);
  split_at(allocation.staged, at + bytes);
  std::size_t covered = at;  // up to where the ranges seen so far reach without a gap
  for (auto it = allocation.staged.lower_bound(at);
       it != allocation.staged.end() && it->first < at + bytes; ++it) {
    Staged& range = it->second;
    if (it->first != covered) unwritten = true;
    covered = range.end;
    if (range.cast_read) stale = true;
    const CopyState& state = copy_states_[range.copy - 1];
    if (state.stream != stream && !state.done) {
      unordered = true;
      other = range.copy;
    }
    range.cast_read = true;
  }
  if (covered != at + bytes) unwritten = true;
  if (unwritten) {
    violation(cast + " that no copy wrote (the cast was queued before the copy that stages them)");
  }
  if (stale) {
    violation(cast +
              " whose copy an earlier cast already read (stale staging: the cast was queued "
              "before the copy that refills them)");
  }
  if (unordered) {
    violation(cast + " that copy " + std::to_string(other) +
              ", queued on another stream, has not written yet (nothing orders the two)");
  }
}

void EmulatedDevice::cast_async(Dtype from, const std::byte* device_in, Dtype to,
                                std::byte* device_out, std::size_t count, DeviceStream stream) {
  std::string why;
  if (!can_cast(from, to, why)) {
    fail(ErrorCode::device, "emulated device",
         "cast of " + std::to_string(count) + " elements refused: " + why);
  }
  const std::size_t in_width = dtype_bits(from) / 8;
  const std::size_t out_width = dtype_bits(to) / 8;
  {
    std::lock_guard lock(mutex_);
    const std::uint64_t number = ++queued_casts_;
    auto* s = static_cast<Stream*>(stream);
    if (s->destroyed) violation("cast queued on a destroyed stream");
    const std::string cast = "cast " + std::to_string(number) + " (" +
                             std::string(dtype_name(from)) + " to " + std::string(dtype_name(to)) +
                             ", " + std::to_string(count) + " elements)";
    // A GPU faults on misaligned element access.
    if (reinterpret_cast<std::uintptr_t>(device_in) % in_width != 0 ||
        reinterpret_cast<std::uintptr_t>(device_out) % out_width != 0) {
      violation(cast + ": a side is not aligned to its element size");
      return;
    }
    const auto* source = find(device_, device_in, count * in_width);
    const auto* target = find(device_, device_out, count * out_width);
    if (source == nullptr || target == nullptr) {
      violation(cast + (source == nullptr ? " reads" : " writes") +
                " bytes outside every device allocation");
      return;
    }
    if (source == target && device_in < device_out + count * out_width &&
        device_out < device_in + count * in_width) {
      violation(cast + ": source and destination overlap");
    }
    check_cast_source(const_cast<Allocation&>(source->second),
                      static_cast<std::size_t>(device_in - source->first), count * in_width, s,
                      number);
    Op op;
    op.kind = Kind::cast;
    op.device = device_out;
    op.bytes = count * out_width;
    op.number = number;
    op.source = device_in;
    op.source_bytes = count * in_width;
    op.count = count;
    op.from = from;
    op.to = to;
    s->ops.push_back(op);
  }
  work_.notify_one();
}

void EmulatedDevice::staging_write(const std::byte* host, std::size_t bytes) {
  std::lock_guard lock(mutex_);
  const auto* block = find(pinned_, host, bytes);
  if (block == nullptr) {
    violation("the host staged " + std::to_string(bytes) +
              " bytes outside every pinned allocation");
    return;
  }
  std::uint64_t number = 0;
  if (reads_pending(host, host + bytes, &number)) {
    violation("the host wrote staging bytes " + range(block->first, host, bytes) + " while copy " +
              std::to_string(number) +
              " out of them was still queued (a slot reused before its event completed)");
  }
}

bool EmulatedDevice::can_read_direct(bool required, std::string& why) {
  (void)required;
  if (!options_.direct_reads) {
    why = "the emulated device's direct reads are off (EmulatedDevice::Options::direct_reads)";
    return false;
  }
  return true;
}

bool EmulatedDevice::read_direct(const DirectFile& file, std::uint64_t offset, std::byte* dest,
                                 std::size_t bytes, std::string& why) {
  const std::string what = "direct read of " + std::to_string(bytes) + " bytes at offset " +
                           std::to_string(offset) + " of " + *file.name;
  if (options_.refuse_direct_files) {
    why = "the emulated device refuses " + *file.name + " (a fault injected by the test)";
    return false;
  }
  {
    std::lock_guard lock(mutex_);
    direct_files_.insert(*file.name);
    if (find(device_, dest, bytes) == nullptr) {
      violation(what + " writes outside every device allocation");
      return true;  // as a DMA engine would have corrupted memory; nothing is written here
    }
    if (writes_pending(dest, dest + bytes))
      violation(what + " writes device bytes that a queued copy or cast also writes");
  }
  // Outside the lock, as reads run in parallel; the bytes are device memory this emulator
  // owns, which nothing else writes (checked above).
  pread_exact(file.fd, *file.name, offset, {dest, bytes});
  std::lock_guard lock(mutex_);
  if (const auto* found = find(device_, dest, bytes)) {
    auto& writes = const_cast<Allocation&>(found->second).writes;
    const std::size_t at = static_cast<std::size_t>(dest - found->first);
    for (std::size_t i = at; i < at + bytes; ++i) {
      if (writes[i] != 255) ++writes[i];
    }
  }
  ++report_.direct_reads;
  report_.bytes_read_direct += bytes;
  return true;
}

void EmulatedDevice::staging_kept(const std::byte* host, std::size_t bytes) noexcept {
  std::lock_guard lock(mutex_);
  std::uint64_t number = 0;
  if (reads_pending(host, host + bytes, &number)) {
    violation("pinned memory kept for the next load while copy " + std::to_string(number) +
              " out of it was still queued");
  }
}

void EmulatedDevice::end_direct_reads() noexcept {
  std::lock_guard lock(mutex_);
  direct_files_.clear();
}

EmulatedDevice::Report EmulatedDevice::check() {
  std::unique_lock lock(mutex_);
  done_.wait(lock, [&] { return idle(); });
  Report report = report_;
  for (const std::string& name : direct_files_) {
    ++report.violation_count;
    report.violations.push_back("direct reads of " + name +
                                " were never ended (end_direct_reads): cuFile would keep the "
                                "closed descriptor registered");
  }
  for (const auto& [p, allocation] : device_) {
    std::uint64_t unwritten = 0, twice = 0;
    std::size_t first_unwritten = SIZE_MAX, first_twice = SIZE_MAX;
    for (std::size_t i = 0; i < allocation.bytes; ++i) {
      if (allocation.writes[i] == 0) {
        if (unwritten++ == 0) first_unwritten = i;
      } else if (allocation.writes[i] > 1) {
        if (twice++ == 0) first_twice = i;
      }
    }
    const std::string which = "device allocation of " + std::to_string(allocation.bytes) + " bytes";
    if (unwritten != 0) {
      ++report.violation_count;
      report.violations.push_back(which + ": " + std::to_string(unwritten) +
                                  " bytes never written, the first at offset " +
                                  std::to_string(first_unwritten));
    }
    if (twice != 0) {
      ++report.violation_count;
      report.violations.push_back(which + ": " + std::to_string(twice) +
                                  " bytes written more than once, the first at offset " +
                                  std::to_string(first_twice));
    }
    report.device_live += allocation.bytes;
  }
  report.pinned_live = pinned_now_;
  return report;
}

}  // namespace safetensors::detail
