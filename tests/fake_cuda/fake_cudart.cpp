// A stand-in for the CUDA runtime (libcudart) for machines without a GPU: the entry points
// src/device/cuda.cpp resolves, with the documented C ABI and semantics, over host memory.
// Loaded through SAFETENSORS_CUDART by tests/unit/fake_cuda_test.cpp, it runs the library's
// real CUDA device (cuda.cpp: dlopen, symbol lookup, error texts, device switching, deleters)
// where the emulated device (src/device/emulated.cpp) stands in for the whole device class.
//
// It checks what the real runtime would not report, and records each misuse as a violation
// (fake_cuda_violations):
// - asynchronous copies go host to device, from pinned memory (cudaHostAlloc) into one
//   device allocation (cudaMalloc), with the kind the direction needs;
// - a copy runs later, on an engine thread, after a delay: the pinned bytes it reads must not
//   change between the call and the copy (a slot reused before its event completed), and
//   device bytes must not be read back (cudaMemcpy) or freed while a copy into them is queued;
// - pinned and device memory are freed once, with the right call, and not while in use;
// - streams and events are used only between their creation and destruction.
// Copies run in order within a stream; across streams the engine serves them round-robin.
//
// The same library also stands in for the driver (libcuda, named by SAFETENSORS_CUDA_DRIVER),
// for the device casts: cuModuleLoadData takes the embedded fatbin (its magic is checked) and
// cuLaunchKernel queues the named kernel on its stream, where it runs cast_ops.hpp's element
// operations, the kernels' own, over the staged bytes; its launch configuration and both
// ranges (inside device allocations, aligned to their elements) are checked. And for cuFile
// (SAFETENSORS_CUFILE): see the end of the file.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <iterator>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

#include "device/cast_ops.hpp"

#define FAKE_CUDA_API extern "C" __attribute__((visibility("default")))

namespace {

// cudaError_t values (driver_types.h).
constexpr int success = 0;
constexpr int invalid_value = 1;
constexpr int memory_allocation = 2;
constexpr int invalid_device = 101;
constexpr int invalid_resource_handle = 400;
constexpr int not_ready = 600;  // never returned: the synchronous calls wait
constexpr int launch_failure = 719;

constexpr int host_to_device = 1;  // cudaMemcpyKind
constexpr int device_to_host = 2;

struct Allocation {
  std::size_t bytes = 0;
  int device = 0;
  bool pinned = false;
};

struct Event;
struct Op {
  // A copy, a kernel (kernel >= 0) or an event's point in its stream (event != nullptr).
  std::byte* dst = nullptr;
  std::size_t dst_bytes = 0;
  const std::byte* src = nullptr;
  std::size_t src_bytes = 0;
  std::uint64_t hash = 0;  // of a copy's source when queued
  int kernel = -1;
  std::size_t count = 0;
  safetensors::detail::F8Table table{};
  Event* event = nullptr;
  std::uint64_t generation = 0;
};

template <class Cast>
void run_cast(const Cast& cast, const std::byte* in, std::byte* out, std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    typename Cast::In x;
    std::memcpy(&x, in + i * sizeof x, sizeof x);
    const typename Cast::Out y = cast(x);
    std::memcpy(out + i * sizeof y, &y, sizeof y);
  }
}

// Calls `f` with the element operation of kernel `kernel` (a DeviceCastKind) of
// cast_kernels.cu, the table kernels' over `table`; false for no such kernel.
template <class F>
bool with_cast(std::uintptr_t kernel, const std::uint32_t* table, F&& f) {
  namespace d = safetensors::detail;
  using Kind = d::DeviceCastKind;
  switch (static_cast<Kind>(kernel)) {
    case Kind::f32_to_f16:
      return f(d::F32ToF16{}), true;
    case Kind::f32_to_bf16:
      return f(d::F32ToBf16{}), true;
    case Kind::f16_to_f32:
      return f(d::F16ToF32{}), true;
    case Kind::bf16_to_f32:
      return f(d::Bf16ToF32{}), true;
    case Kind::f16_to_bf16:
      return f(d::F16ToBf16{}), true;
    case Kind::bf16_to_f16:
      return f(d::Bf16ToF16{}), true;
    case Kind::f8_to_f32:
      return f(d::F8Lookup<std::uint32_t>{table}), true;
    case Kind::f8_to_16:
      return f(d::F8Lookup<std::uint16_t>{table}), true;
    case Kind::count:
      break;
  }
  return false;
}

// What a kernel computes, with the kernels' own element operations.
void run_kernel(const Op& op) {
  (void)with_cast(static_cast<std::uintptr_t>(op.kernel), op.table.value,
                  [&](const auto& cast) { run_cast(cast, op.src, op.dst, op.count); });
}

struct Stream {
  std::deque<Op> ops;
  bool destroyed = false;
};

struct Event {
  std::uint64_t recorded = 0;
  std::uint64_t completed = 0;
  bool destroyed = false;
};

std::uint64_t hash_of(const std::byte* p, std::size_t n) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ static_cast<std::uint8_t>(p[i])) * 1099511628211ull;
  return h;
}

class Fake {
 public:
  Fake() : engine_([this] { serve(); }) {
    if (const char* n = std::getenv("FAKE_CUDA_DEVICES")) devices_ = std::atoi(n);
  }
  ~Fake() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    work_.notify_all();
    engine_.join();
  }

  std::mutex mutex_;
  std::condition_variable work_;
  std::condition_variable done_;
  std::map<std::uintptr_t, Allocation> memory_;  // by first byte
  std::set<Stream*> streams_;
  std::set<Event*> events_;
  std::vector<std::string> violations_;
  std::uint64_t violation_count_ = 0;
  std::uint64_t copies_ = 0;     // asynchronous copies accepted
  std::uint64_t fail_copy_ = 0;  // when non-zero, the copy of this number fails
  int devices_ = 2;
  bool stopping_ = false;

  void violation(std::string what) {  // with mutex_ held
    ++violation_count_;
    if (violations_.size() < 50) violations_.push_back(std::move(what));
  }

  // The allocation holding [p, p + n), or nullptr.
  const Allocation* find(const void* p, std::size_t n) const {
    const auto at = reinterpret_cast<std::uintptr_t>(p);
    auto it = memory_.upper_bound(at);
    if (it == memory_.begin()) return nullptr;
    --it;
    if (at - it->first > it->second.bytes || n > it->second.bytes - (at - it->first))
      return nullptr;
    return &it->second;
  }

  // Whether a queued copy reads or writes bytes of [p, p + n).
  bool pending(const std::byte* p, std::size_t n) const {
    for (const Stream* s : streams_) {
      for (const Op& op : s->ops) {
        if (op.event != nullptr) continue;
        const bool writes = op.dst < p + n && p < op.dst + op.dst_bytes;
        const bool reads = op.src < p + n && p < op.src + op.src_bytes;
        if (writes || reads) return true;
      }
    }
    return false;
  }

  // `handle` as a stream or an event between its creation and destruction, or nullptr after
  // recording the misuse by `call`.
  Stream* live_stream(void* handle, const char* call) {
    auto* s = static_cast<Stream*>(handle);
    if (streams_.contains(s) && !s->destroyed) return s;
    violation(std::string(call) + " with a stream that does not exist");
    return nullptr;
  }
  Event* live_event(void* handle, const char* call) {
    auto* e = static_cast<Event*>(handle);
    if (events_.contains(e) && !e->destroyed) return e;
    violation(std::string(call) + " with an event that does not exist");
    return nullptr;
  }

  // Whether a queued operation still points at `e`.
  bool referenced(const Event* e) const {
    for (const Stream* s : streams_) {
      for (const Op& op : s->ops) {
        if (op.event == e) return true;
      }
    }
    return false;
  }

  // Deletes `e` once it is destroyed and nothing queued refers to it.
  void reclaim(Event* e) {
    if (!e->destroyed || referenced(e)) return;
    events_.erase(e);
    delete e;
  }

  bool idle(const Stream* only) const {
    for (const Stream* s : streams_) {
      if ((only == nullptr || s == only) && !s->ops.empty()) return false;
    }
    return true;
  }

 private:
  // Serves the streams round-robin, one operation at a time, each copy after a short delay so
  // that a ring slot reused too early is overwritten before its copy reads it.
  void serve() {
    std::unique_lock lock(mutex_);
    std::size_t turn = 0;
    while (true) {
      work_.wait(lock, [&] { return stopping_ || !idle(nullptr); });
      if (stopping_ && idle(nullptr)) return;
      std::vector<Stream*> busy;
      for (Stream* s : streams_) {
        if (!s->ops.empty()) busy.push_back(s);
      }
      Stream* s = busy[turn++ % busy.size()];
      Op op = s->ops.front();
      if (op.kernel >= 0) {
        run_kernel(op);
      } else if (op.event == nullptr) {
        lock.unlock();
        std::this_thread::sleep_for(std::chrono::microseconds(30));
        lock.lock();
        if (hash_of(op.src, op.src_bytes) != op.hash) {
          violation("the pinned source of a queued copy of " + std::to_string(op.src_bytes) +
                    " bytes changed before the copy ran (a staging buffer reused too early)");
        }
        std::memcpy(op.dst, op.src, op.src_bytes);
      } else {
        op.event->completed = std::max(op.event->completed, op.generation);
      }
      s->ops.pop_front();
      if (op.event != nullptr) reclaim(op.event);
      if (s->destroyed && s->ops.empty()) {
        streams_.erase(s);
        delete s;
      }
      done_.notify_all();
    }
  }

  std::thread engine_;
};

Fake& fake() {
  static Fake instance;
  return instance;
}

thread_local int current_device = 0;
// Whether this thread has a current context for the driver API: since CUDA 12 cudaSetDevice
// makes the device's primary context current, as does the runtime's first real call
// (cudaFree(0) is the usual way to ask for it); a driver call needs one.
thread_local bool context_current = false;

std::byte* allocate(std::size_t bytes) {
  // Some bytes even for an empty request, so that every allocation has its own address.
  return static_cast<std::byte*>(std::aligned_alloc(256, (bytes + 256) / 256 * 256));
}

}  // namespace

FAKE_CUDA_API int cudaGetDeviceCount(int* count) {
  *count = fake().devices_;
  return success;
}

FAKE_CUDA_API int cudaSetDevice(int device) {
  if (device < 0 || device >= fake().devices_) return invalid_device;
  current_device = device;
  context_current = true;
  return success;
}

FAKE_CUDA_API int cudaGetDevice(int* device) {
  *device = current_device;
  return success;
}

FAKE_CUDA_API int cudaRuntimeGetVersion(int* version) {
  *version = 13000;
  return success;
}

FAKE_CUDA_API int cudaDriverGetVersion(int* version) {
  *version = 13000;
  return success;
}

FAKE_CUDA_API const char* cudaGetErrorString(int code) {
  switch (code) {
    case success:
      return "no error";
    case invalid_value:
      return "invalid argument";
    case memory_allocation:
      return "out of memory";
    case invalid_device:
      return "invalid device ordinal";
    case invalid_resource_handle:
      return "invalid resource handle";
    case not_ready:
      return "device not ready";
    case launch_failure:
      return "unspecified launch failure";
    default:
      return "unrecognized error code";
  }
}

FAKE_CUDA_API int cudaMalloc(void** p, std::size_t bytes) {
  std::byte* memory = allocate(bytes);
  if (memory == nullptr) return memory_allocation;
  Fake& f = fake();
  std::lock_guard lock(f.mutex_);
  f.memory_[reinterpret_cast<std::uintptr_t>(memory)] = {bytes, current_device, false};
  *p = memory;
  return success;
}

FAKE_CUDA_API int cudaHostAlloc(void** p, std::size_t bytes, unsigned flags) {
  if (flags > 0xF) return invalid_value;
  std::byte* memory = allocate(bytes);
  if (memory == nullptr) return memory_allocation;
  Fake& f = fake();
  std::lock_guard lock(f.mutex_);
  f.memory_[reinterpret_cast<std::uintptr_t>(memory)] = {bytes, current_device, true};
  *p = memory;
  return success;
}

namespace {

int release(void* p, bool pinned, const char* call) {
  Fake& f = fake();
  std::lock_guard lock(f.mutex_);
  const auto it = f.memory_.find(reinterpret_cast<std::uintptr_t>(p));
  if (it == f.memory_.end() || it->second.pinned != pinned) {
    f.violation(std::string(call) + " of memory it did not allocate");
    return invalid_value;
  }
  if (f.pending(static_cast<std::byte*>(p), it->second.bytes)) {
    f.violation(std::string(call) + " of memory a queued copy still uses");
    return success;  // kept, so that the queued copy does not touch freed memory
  }
  f.memory_.erase(it);
  std::free(p);
  return success;
}

}  // namespace

FAKE_CUDA_API int cudaFree(void* p) {
  if (p == nullptr) {  // initialises the context, nothing else
    context_current = true;
    return success;
  }
  return release(p, false, "cudaFree");
}

FAKE_CUDA_API int cudaFreeHost(void* p) {
  if (p == nullptr) return success;
  return release(p, true, "cudaFreeHost");
}

namespace {

// A new stream or event, kept in `live` until destroyed.
template <class T>
int create(std::set<T*>& live, void** out) {
  std::lock_guard lock(fake().mutex_);
  auto* created = new T;
  live.insert(created);
  *out = created;
  return success;
}

}  // namespace

FAKE_CUDA_API int cudaStreamCreateWithFlags(void** stream, unsigned flags) {
  if (flags > 1) return invalid_value;
  return create(fake().streams_, stream);
}

FAKE_CUDA_API int cudaEventCreateWithFlags(void** event, unsigned flags) {
  if (flags > 0xF) return invalid_value;
  return create(fake().events_, event);
}

FAKE_CUDA_API int cudaStreamDestroy(void* stream) {
  Fake& f = fake();
  std::lock_guard lock(f.mutex_);
  Stream* s = f.live_stream(stream, "cudaStreamDestroy");
  if (s == nullptr) return invalid_resource_handle;
  // Its queued work still runs, as the real runtime's does; the engine deletes it after.
  s->destroyed = true;
  if (s->ops.empty()) {
    f.streams_.erase(s);
    delete s;
  }
  return success;
}

FAKE_CUDA_API int cudaEventDestroy(void* event) {
  Fake& f = fake();
  std::lock_guard lock(f.mutex_);
  Event* e = f.live_event(event, "cudaEventDestroy");
  if (e == nullptr) return invalid_resource_handle;
  e->destroyed = true;  // deleted once no queued record points at it
  f.reclaim(e);
  return success;
}

FAKE_CUDA_API int cudaStreamSynchronize(void* stream) {
  Fake& f = fake();
  std::unique_lock lock(f.mutex_);
  Stream* s = f.live_stream(stream, "cudaStreamSynchronize");
  if (s == nullptr) return invalid_resource_handle;
  f.done_.wait(lock, [&] { return s->ops.empty(); });
  return success;
}

FAKE_CUDA_API int cudaEventSynchronize(void* event) {
  Fake& f = fake();
  std::unique_lock lock(f.mutex_);
  Event* e = f.live_event(event, "cudaEventSynchronize");
  if (e == nullptr) return invalid_resource_handle;
  const std::uint64_t target = e->recorded;
  f.done_.wait(lock, [&] { return e->completed >= target; });
  return success;
}

FAKE_CUDA_API int cudaEventRecord(void* event, void* stream) {
  Fake& f = fake();
  std::lock_guard lock(f.mutex_);
  Event* e = f.live_event(event, "cudaEventRecord");
  Stream* s = f.live_stream(stream, "cudaEventRecord");
  if (e == nullptr || s == nullptr) return invalid_resource_handle;
  Op op;
  op.event = e;
  op.generation = ++e->recorded;
  s->ops.push_back(op);
  f.work_.notify_all();
  return success;
}

FAKE_CUDA_API int cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, int kind,
                                  void* stream) {
  Fake& f = fake();
  std::lock_guard lock(f.mutex_);
  Stream* s = f.live_stream(stream, "cudaMemcpyAsync");
  if (s == nullptr) return invalid_resource_handle;
  const Allocation* to = f.find(dst, bytes);
  const Allocation* from = f.find(src, bytes);
  if (kind != host_to_device) {
    f.violation("cudaMemcpyAsync of kind " + std::to_string(kind) + " (the loads copy to devices)");
    return invalid_value;
  }
  if (to == nullptr || to->pinned) {
    f.violation("cudaMemcpyAsync of " + std::to_string(bytes) +
                " bytes to memory that is not inside one device allocation");
    return invalid_value;
  }
  if (from == nullptr || !from->pinned) {
    f.violation("cudaMemcpyAsync of " + std::to_string(bytes) +
                " bytes from memory that is not pinned (the copy would not be asynchronous)");
    return invalid_value;
  }
  if (++f.copies_ == f.fail_copy_) return launch_failure;
  Op op;
  op.dst = static_cast<std::byte*>(dst);
  op.dst_bytes = bytes;
  op.src = static_cast<const std::byte*>(src);
  op.src_bytes = bytes;
  op.hash = hash_of(op.src, bytes);
  s->ops.push_back(op);
  f.work_.notify_all();
  return success;
}

FAKE_CUDA_API int cudaMemcpy(void* dst, const void* src, std::size_t bytes, int kind) {
  Fake& f = fake();
  std::lock_guard lock(f.mutex_);
  if (kind != device_to_host) {
    f.violation("cudaMemcpy of kind " + std::to_string(kind) + " (only read-backs are expected)");
    return invalid_value;
  }
  const Allocation* from = f.find(src, bytes);
  if (from == nullptr || from->pinned) {
    f.violation("cudaMemcpy of " + std::to_string(bytes) +
                " bytes from memory that is not inside one device allocation");
    return invalid_value;
  }
  // The loads' streams are non-blocking: a synchronous copy does not wait for them.
  if (f.pending(static_cast<const std::byte*>(src), bytes))
    f.violation("cudaMemcpy read device bytes that a queued copy still writes");
  std::memcpy(dst, src, bytes);
  return success;
}

// The test's view of the fake: violations (joined by newlines into `text`, at most `size`
// bytes), live memory, and a copy to fail.
FAKE_CUDA_API std::uint64_t fake_cuda_violations(char* text, std::size_t size) {
  Fake& f = fake();
  std::lock_guard lock(f.mutex_);
  std::string all;
  for (const std::string& v : f.violations_) all += v + "\n";
  if (size != 0) {
    const std::size_t n = std::min(size - 1, all.size());
    std::memcpy(text, all.data(), n);
    text[n] = '\0';
  }
  return f.violation_count_;
}

FAKE_CUDA_API void fake_cuda_live(std::uint64_t* device_bytes, std::uint64_t* pinned_bytes) {
  Fake& f = fake();
  std::lock_guard lock(f.mutex_);
  *device_bytes = *pinned_bytes = 0;
  for (const auto& [at, allocation] : f.memory_) {
    (allocation.pinned ? *pinned_bytes : *device_bytes) += allocation.bytes;
  }
}

FAKE_CUDA_API void fake_cuda_fail_copy(std::uint64_t after) {
  Fake& f = fake();
  std::lock_guard lock(f.mutex_);
  f.fail_copy_ = after == 0 ? 0 : f.copies_ + after;
}

// The driver API (cuda.h): CUresult values, and the entry points cuda.cpp resolves.
namespace {
constexpr int cu_invalid_value = 1;
constexpr int cu_invalid_image = 200;
constexpr int cu_invalid_context = 201;
constexpr int cu_not_found = 500;
constexpr std::uint32_t fatbin_magic = 0xBA55ED50;  // the first word of an nvcc fatbin
int module_token = 0;
}  // namespace

FAKE_CUDA_API int cuInit(unsigned flags) {
  return flags == 0 ? success : cu_invalid_value;
}

FAKE_CUDA_API int cuGetErrorString(int code, const char** text) {
  switch (code) {
    case cu_invalid_value:
      *text = "invalid argument";
      return success;
    case cu_invalid_image:
      *text = "device kernel image is invalid";
      return success;
    case cu_invalid_context:
      *text = "invalid device context";
      return success;
    case cu_not_found:
      *text = "named symbol not found";
      return success;
    default:
      *text = cudaGetErrorString(code);
      return success;
  }
}

FAKE_CUDA_API int cuModuleLoadData(void** module, const void* image) {
  if (!context_current) {
    Fake& f = fake();
    std::lock_guard lock(f.mutex_);
    f.violation("cuModuleLoadData on a thread with no current context");
    return cu_invalid_context;
  }
  std::uint32_t magic = 0;
  if (image != nullptr) std::memcpy(&magic, image, sizeof magic);
  if (magic != fatbin_magic) {
    Fake& f = fake();
    std::lock_guard lock(f.mutex_);
    f.violation("cuModuleLoadData of an image that is not an nvcc fatbin");
    return cu_invalid_image;
  }
  *module = &module_token;
  return success;
}

FAKE_CUDA_API int cuModuleGetFunction(void** function, void* module, const char* name) {
  if (module != &module_token) return cu_invalid_value;
  const auto& names = safetensors::detail::device_cast_kernel_names;
  for (std::size_t k = 0; k < std::size(names); ++k) {
    if (std::strcmp(name, names[k]) == 0) {
      // The function handle is the kernel's index + 1 (never null).
      *function = reinterpret_cast<void*>(k + 1);
      return success;
    }
  }
  return cu_not_found;
}

FAKE_CUDA_API int cuModuleUnload(void* module) {
  return module == &module_token ? success : cu_invalid_value;
}

FAKE_CUDA_API int cuLaunchKernel(void* function, unsigned grid_x, unsigned grid_y, unsigned grid_z,
                                 unsigned block_x, unsigned block_y, unsigned block_z,
                                 unsigned shared_bytes, void* stream, void** params, void** extra) {
  Fake& f = fake();
  std::lock_guard lock(f.mutex_);
  // The function handle is the kernel's index + 1 (cuModuleGetFunction).
  const std::uintptr_t kernel = reinterpret_cast<std::uintptr_t>(function) - 1;
  std::size_t in_size = 0, out_size = 0;
  bool has_table = false;
  const bool known = with_cast(kernel, nullptr, [&](const auto& cast) {
    using Cast = std::decay_t<decltype(cast)>;
    in_size = sizeof(typename Cast::In);
    out_size = sizeof(typename Cast::Out);
    has_table = requires {
      cast.table;
    };
  });
  if (!known || params == nullptr || extra != nullptr) {
    f.violation("cuLaunchKernel with an unknown function or no parameters");
    return cu_invalid_value;
  }
  const std::uint64_t threads = std::uint64_t{block_x} * block_y * block_z;
  if (threads == 0 || threads > 1024 || grid_x == 0 || grid_x > 0x7FFFFFFFu || grid_y == 0 ||
      grid_y > 65535 || grid_z == 0 || grid_z > 65535 || shared_bytes > 48 * 1024) {
    f.violation("cuLaunchKernel with a launch configuration no GPU accepts");
    return cu_invalid_value;
  }
  if (!context_current) {
    f.violation("cuLaunchKernel on a thread with no current context (no cudaSetDevice)");
    return cu_invalid_context;
  }
  Stream* s = f.live_stream(stream, "cuLaunchKernel");
  if (s == nullptr) return invalid_resource_handle;
  Op op;
  op.kernel = static_cast<int>(kernel);
  op.src = *static_cast<const std::byte* const*>(params[0]);
  op.dst = *static_cast<std::byte* const*>(params[1]);
  op.count = static_cast<std::size_t>(*static_cast<const unsigned long long*>(params[2]));
  if (has_table) std::memcpy(&op.table, params[3], sizeof op.table);
  op.src_bytes = op.count * in_size;
  op.dst_bytes = op.count * out_size;
  const Allocation* from = f.find(op.src, op.src_bytes);
  const Allocation* to = f.find(op.dst, op.dst_bytes);
  if (from == nullptr || from->pinned || to == nullptr || to->pinned ||
      reinterpret_cast<std::uintptr_t>(op.src) % in_size != 0 ||
      reinterpret_cast<std::uintptr_t>(op.dst) % out_size != 0) {
    f.violation(std::string("cuLaunchKernel of ") +
                safetensors::detail::device_cast_kernel_names[kernel] + " over " +
                std::to_string(op.count) +
                " elements not inside device allocations, or not aligned to its elements");
    return cu_invalid_value;
  }
  s->ops.push_back(op);
  f.work_.notify_all();
  return success;
}

// cuFile (cufile.h), GPUDirect Storage, named by SAFETENSORS_CUFILE: reads files into device
// allocations with pread. Checked: a handle is registered for an open descriptor with the
// opaque-fd type and no fs_ops, reads go through a registered handle into one device
// allocation, and a handle is deregistered while its descriptor is still open (NVIDIA's
// order: register, read, deregister, close).
namespace {

struct FileError {  // CUfileError_t
  int err;
  int cu_err;
};
struct FileDescr {  // CUfileDescr_t
  int type;
  union {
    int fd;
    void* handle;
  } handle;
  const void* fs_ops;
};
struct FileDriverProps {  // CUfileDrvProps_t, as far as the library reads it
  struct {
    unsigned major_version, minor_version;
    std::size_t poll_thresh_size, max_direct_io_size;
    unsigned dstatusflags, dcontrolflags;
  } nvfs;
  unsigned fflags;
  unsigned limits[5];
};
constexpr int file_invalid_value = 5022;  // CU_FILE_INVALID_VALUE - CU_FILE_ERROR_BASE + 5000

std::mutex files_mutex;
// A registered file: the caller's descriptor, and one of our own without O_DIRECT (cuFile
// copes with unaligned requests itself; pread on an O_DIRECT descriptor would refuse them).
struct Registered {
  int fd;
  int buffered;
};
std::map<void*, Registered> registered;
std::uintptr_t handles_made = 0;

bool descriptor_open(int fd) {
  return ::fcntl(fd, F_GETFD) != -1;
}

}  // namespace

FAKE_CUDA_API FileError cuFileDriverOpen() {
  return {0, 0};
}

FAKE_CUDA_API FileError cuFileDriverGetProperties(FileDriverProps* props) {
  std::memset(props, 0, sizeof *props);
  props->nvfs.major_version = 2;  // as if nvidia-fs were loaded, on a supported file system
  props->nvfs.minor_version = 30;
  props->nvfs.dstatusflags = 1;
  return {0, 0};
}

FAKE_CUDA_API FileError cuFileHandleRegister(void** handle, FileDescr* descr) {
  std::lock_guard lock(files_mutex);
  if (descr == nullptr || descr->type != 1 || descr->fs_ops != nullptr ||
      !descriptor_open(descr->handle.fd)) {
    Fake& f = fake();
    std::lock_guard fake_lock(f.mutex_);
    f.violation("cuFileHandleRegister of something that is not an open descriptor (type 1)");
    return {file_invalid_value, 0};
  }
  const std::string own = "/proc/self/fd/" + std::to_string(descr->handle.fd);
  const int buffered = ::open(own.c_str(), O_RDONLY | O_CLOEXEC);
  if (buffered < 0) return {file_invalid_value, 0};
  *handle = reinterpret_cast<void*>(++handles_made);  // distinct, never dereferenced
  registered[*handle] = {descr->handle.fd, buffered};
  return {0, 0};
}

FAKE_CUDA_API void cuFileHandleDeregister(void* handle) {
  std::lock_guard lock(files_mutex);
  const auto it = registered.find(handle);
  Fake& f = fake();
  std::lock_guard fake_lock(f.mutex_);
  if (it == registered.end()) {
    f.violation("cuFileHandleDeregister of a handle that is not registered");
    return;
  }
  if (!descriptor_open(it->second.fd)) {
    f.violation("cuFileHandleDeregister after the file's descriptor was closed");
  }
  ::close(it->second.buffered);
  registered.erase(it);
}

FAKE_CUDA_API ssize_t cuFileRead(void* handle, void* base, std::size_t size, off_t file_offset,
                                 off_t base_offset) {
  int fd = -1;
  {
    std::lock_guard lock(files_mutex);
    const auto it = registered.find(handle);
    if (it != registered.end()) fd = it->second.buffered;
  }
  Fake& f = fake();
  {
    std::lock_guard lock(f.mutex_);
    if (fd < 0) {
      f.violation("cuFileRead through a handle that is not registered");
      return -file_invalid_value;
    }
    const Allocation* to = f.find(static_cast<std::byte*>(base) + base_offset, size);
    if (base_offset < 0 || to == nullptr || to->pinned) {
      f.violation("cuFileRead of " + std::to_string(size) +
                  " bytes into memory that is not inside one device allocation");
      return -file_invalid_value;
    }
  }
  return ::pread(fd, static_cast<std::byte*>(base) + base_offset, size, file_offset);
}
