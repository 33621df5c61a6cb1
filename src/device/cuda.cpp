#include "device/cuda.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "device/cast_image.hpp"
#include "device/device_cast.hpp"
#include "device/gds.hpp"
#include "device/pinned_cache.hpp"
#include "error/messages.hpp"
#include "io/dynamic_library.hpp"
#include "safetensors/error.hpp"

namespace safetensors::detail {

// The runtime API as its C ABI has it: cudaError_t is an int enum (0 = cudaSuccess, 600 =
// cudaErrorNotReady), streams and events are opaque pointers, sizes are size_t.
struct CudaRuntime {
  DynamicLibrary library;
  int (*malloc)(void**, std::size_t) = nullptr;
  int (*free)(void*) = nullptr;
  int (*host_alloc)(void**, std::size_t, unsigned) = nullptr;
  int (*free_host)(void*) = nullptr;
  int (*memcpy)(void*, const void*, std::size_t, int) = nullptr;
  int (*memcpy_async)(void*, const void*, std::size_t, int, void*) = nullptr;
  int (*stream_create)(void**, unsigned) = nullptr;
  int (*stream_destroy)(void*) = nullptr;
  int (*stream_synchronize)(void*) = nullptr;
  int (*event_create)(void**, unsigned) = nullptr;
  int (*event_destroy)(void*) = nullptr;
  int (*event_record)(void*, void*) = nullptr;
  int (*event_synchronize)(void*) = nullptr;
  int (*set_device)(int) = nullptr;
  int (*get_device)(int*) = nullptr;
  int (*device_count)(int*) = nullptr;
  int (*runtime_version)(int*) = nullptr;
  int (*driver_version)(int*) = nullptr;
  const char* (*error_string)(int) = nullptr;
};

namespace {

constexpr int cuda_success = 0;
constexpr int memcpy_host_to_device = 1;      // cudaMemcpyHostToDevice
constexpr int memcpy_device_to_host = 2;      // cudaMemcpyDeviceToHost
constexpr unsigned host_alloc_portable = 1;   // cudaHostAllocPortable
constexpr unsigned stream_non_blocking = 1;   // cudaStreamNonBlocking
constexpr unsigned event_disable_timing = 2;  // cudaEventDisableTiming

// The pinned staging memory CUDA loads keep for the next one (pinned_cache.hpp). Never
// destroyed, so a kept block is not freed at exit: static destructors may run after the CUDA
// runtime has been torn down (its own atexit handlers, or a framework unloading it), when
// cudaFreeHost would crash or fail, and the system takes the memory back anyway.
PinnedCache& cuda_pinned_cache() {
  static PinnedCache* const cache = new PinnedCache;
  return *cache;
}

std::mutex runtime_mutex;
std::vector<std::string> extra_candidates;
// Loaded once and kept for the life of the process: device memory handed out refers to it.
std::unique_ptr<CudaRuntime> loaded_runtime;

template <class Fn>
bool resolve(const DynamicLibrary& library, const char* name, Fn& fn, std::string& missing) {
  fn = reinterpret_cast<Fn>(library.symbol(name));
  if (fn == nullptr && missing.empty()) missing = name;
  return fn != nullptr;
}

std::unique_ptr<CudaRuntime> open_runtime(const std::string& name, std::string& why) {
  auto runtime = std::make_unique<CudaRuntime>();
  runtime->library = DynamicLibrary::open(name, why);
  if (!runtime->library) return nullptr;
  const DynamicLibrary& l = runtime->library;
  std::string missing;
  resolve(l, "cudaMalloc", runtime->malloc, missing);
  resolve(l, "cudaFree", runtime->free, missing);
  resolve(l, "cudaHostAlloc", runtime->host_alloc, missing);
  resolve(l, "cudaFreeHost", runtime->free_host, missing);
  resolve(l, "cudaMemcpy", runtime->memcpy, missing);
  resolve(l, "cudaMemcpyAsync", runtime->memcpy_async, missing);
  resolve(l, "cudaStreamCreateWithFlags", runtime->stream_create, missing);
  resolve(l, "cudaStreamDestroy", runtime->stream_destroy, missing);
  resolve(l, "cudaStreamSynchronize", runtime->stream_synchronize, missing);
  resolve(l, "cudaEventCreateWithFlags", runtime->event_create, missing);
  resolve(l, "cudaEventDestroy", runtime->event_destroy, missing);
  resolve(l, "cudaEventRecord", runtime->event_record, missing);
  resolve(l, "cudaEventSynchronize", runtime->event_synchronize, missing);
  resolve(l, "cudaSetDevice", runtime->set_device, missing);
  resolve(l, "cudaGetDevice", runtime->get_device, missing);
  resolve(l, "cudaGetDeviceCount", runtime->device_count, missing);
  resolve(l, "cudaRuntimeGetVersion", runtime->runtime_version, missing);
  resolve(l, "cudaDriverGetVersion", runtime->driver_version, missing);
  resolve(l, "cudaGetErrorString", runtime->error_string, missing);
  if (!missing.empty()) {
    why = l.name() + " lacks " + missing;
    return nullptr;
  }
  return runtime;
}

std::string error_text(const CudaRuntime& runtime, int code) {
  const char* text = runtime.error_string(code);
  return std::string(text != nullptr ? text : "unknown error") + " (CUDA error " +
         std::to_string(code) + ")";
}

void check(const CudaRuntime& runtime, int code, const std::string& what) {
  if (code != cuda_success)
    fail(ErrorCode::device, "CUDA", what + " failed: " + error_text(runtime, code));
}

// The loaded runtime, or nullptr with `why`.
const CudaRuntime* try_runtime(std::string& why) {
  std::lock_guard lock(runtime_mutex);
  if (loaded_runtime) return loaded_runtime.get();
  std::vector<std::string> candidates;
  if (const char* forced = std::getenv("SAFETENSORS_CUDART"); forced != nullptr && *forced) {
    candidates.emplace_back(forced);
  } else {
    candidates = extra_candidates;
    // Versioned names first: dlopen matches them against the sonames of libraries already
    // loaded (a framework's own runtime, loaded by path), where the unversioned name, a
    // development symlink, would load a second copy from the system.
    for (const char* name :
         {"libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so"}) {
      candidates.emplace_back(name);
    }
  }
  std::string tried;
  for (const std::string& name : candidates) {
    std::string reason;
    std::unique_ptr<CudaRuntime> runtime = open_runtime(name, reason);
    if (runtime) {
      loaded_runtime = std::move(runtime);
      return loaded_runtime.get();
    }
    tried += (tried.empty() ? "" : "; ") + reason;
  }
  why = "no CUDA runtime could be loaded (tried " + std::to_string(candidates.size()) +
        (std::getenv("SAFETENSORS_CUDART") != nullptr ? " library named by SAFETENSORS_CUDART"
                                                      : " libraries") +
        "): " + tried;
  return nullptr;
}

// The driver API entry points the device casts need, as their C ABI has them: CUresult is an
// int enum (0 = CUDA_SUCCESS); modules, functions and streams are opaque pointers, and the
// runtime's cudaStream_t is the driver's CUstream. The runtime makes the device's primary
// context current (cudaSetDevice), and modules loaded there serve every thread bound to it.
struct CudaDriver {
  DynamicLibrary library;
  int (*init)(unsigned) = nullptr;
  int (*module_load_data)(void**, const void*) = nullptr;
  int (*module_get_function)(void**, void*, const char*) = nullptr;
  int (*module_unload)(void*) = nullptr;
  int (*launch_kernel)(void*, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                       void*, void**, void**) = nullptr;
  int (*error_string)(int, const char**) = nullptr;
};

}  // namespace

// The cast kernels of one device, loaded once per process and kept (a module is cheap, and
// unloading it would have to wait for every load using it).
struct CastModule {
  std::string why;  // empty when loaded
  std::array<void*, static_cast<std::size_t>(DeviceCastKind::count)> functions{};
};

namespace {

std::mutex driver_mutex;
std::unique_ptr<CudaDriver> loaded_driver;
std::string driver_why;  // why the driver could not be used, once tried
std::map<int, CastModule> cast_modules;

std::string driver_error(const CudaDriver& driver, int code) {
  const char* text = nullptr;
  if (driver.error_string(code, &text) != cuda_success || text == nullptr) text = "unknown error";
  return std::string(text) + " (CUDA driver error " + std::to_string(code) + ")";
}

// The driver, loaded on first use; nullptr with driver_why. With driver_mutex held.
const CudaDriver* try_driver() {
  if (loaded_driver) return loaded_driver.get();
  if (!driver_why.empty()) return nullptr;
  auto driver = std::make_unique<CudaDriver>();
  std::string why;
  // SAFETENSORS_CUDA_DRIVER names another driver library (a test's stand-in, or a driver
  // outside the loader's path), as SAFETENSORS_CUDART does the runtime.
  const char* named = std::getenv("SAFETENSORS_CUDA_DRIVER");
  driver->library = DynamicLibrary::open(named != nullptr && *named ? named : "libcuda.so.1", why);
  if (!driver->library) {
    driver_why = "the CUDA driver could not be loaded: " + why;
    return nullptr;
  }
  const DynamicLibrary& l = driver->library;
  std::string missing;
  resolve(l, "cuInit", driver->init, missing);
  resolve(l, "cuModuleLoadData", driver->module_load_data, missing);
  resolve(l, "cuModuleGetFunction", driver->module_get_function, missing);
  resolve(l, "cuModuleUnload", driver->module_unload, missing);
  resolve(l, "cuLaunchKernel", driver->launch_kernel, missing);
  resolve(l, "cuGetErrorString", driver->error_string, missing);
  if (!missing.empty()) {
    driver_why = "the CUDA driver " + l.name() + " lacks " + missing;
    return nullptr;
  }
  if (const int code = driver->init(0); code != cuda_success) {
    driver_why = "cuInit failed: " + driver_error(*driver, code);
    return nullptr;
  }
  loaded_driver = std::move(driver);
  return loaded_driver.get();
}

}  // namespace

void add_cuda_runtime_candidates(const std::vector<std::string>& paths) {
  std::lock_guard lock(runtime_mutex);
  for (const std::string& path : paths) {
    if (std::find(extra_candidates.begin(), extra_candidates.end(), path) ==
        extra_candidates.end()) {
      extra_candidates.push_back(path);
    }
  }
}

const CudaRuntime& cuda_runtime() {
  std::string why;
  const CudaRuntime* runtime = try_runtime(why);
  if (runtime == nullptr) fail(ErrorCode::device, "CUDA", "the CUDA path is unavailable: " + why);
  return *runtime;
}

void cuda_copy_to_host(const CudaRuntime& runtime, void* host, const void* device,
                       std::size_t bytes) {
  check(runtime, runtime.memcpy(host, device, bytes, memcpy_device_to_host),
        "cudaMemcpy of " + std::to_string(bytes) + " bytes to the host");
}

void cuda_free_on(const CudaRuntime& runtime, int device, void* memory) noexcept {
  if (memory == nullptr) return;
  int previous = device;
  const bool switched = runtime.get_device(&previous) == cuda_success && previous != device &&
                        runtime.set_device(device) == cuda_success;
  (void)runtime.free(memory);
  if (switched) (void)runtime.set_device(previous);
}

std::uint64_t release_cuda_pinned_cache() {
  const PinnedCache::Block block = cuda_pinned_cache().take();
  if (block.data == nullptr) return 0;
  // The block was pinned through the runtime, which is therefore loaded, and is kept loaded
  // for the life of the process. cudaFreeHost of portable memory needs no current device.
  cuda_runtime().free_host(block.data);
  return block.bytes;
}

CudaDevice::CudaDevice(const CudaRuntime& runtime, int index) : runtime_(runtime), index_(index) {
  check(runtime_, runtime_.get_device(&previous_), "cudaGetDevice");
  check(runtime_, runtime_.set_device(index_), "cudaSetDevice(" + std::to_string(index_) + ")");
}

CudaDevice::~CudaDevice() {
  end_direct_reads();  // normally done by the load already, while its files were open
  if (previous_ != index_) runtime_.set_device(previous_);
}

std::string CudaDevice::describe() const {
  return "CUDA device " + std::to_string(index_) + " (" + runtime_.library.name() + ")";
}

void CudaDevice::bind_thread() {
  check(runtime_, runtime_.set_device(index_), "cudaSetDevice(" + std::to_string(index_) + ")");
}

std::byte* CudaDevice::allocate(std::size_t bytes) {
  void* p = nullptr;
  check(runtime_, runtime_.malloc(&p, bytes),
        "cudaMalloc of " + std::to_string(bytes) + " bytes on device " + std::to_string(index_));
  return static_cast<std::byte*>(p);
}

void CudaDevice::free(std::byte* memory) noexcept {
  if (memory != nullptr) runtime_.free(memory);
}

std::byte* CudaDevice::allocate_pinned(std::size_t bytes) {
  void* p = nullptr;
  check(runtime_, runtime_.host_alloc(&p, bytes, host_alloc_portable),
        "cudaHostAlloc of " + std::to_string(bytes) + " pinned bytes");
  return static_cast<std::byte*>(p);
}

void CudaDevice::free_pinned(std::byte* memory) noexcept {
  if (memory != nullptr) runtime_.free_host(memory);
}

PinnedCache* CudaDevice::pinned_cache() noexcept {
  return &cuda_pinned_cache();
}

DeviceStream CudaDevice::create_stream() {
  void* stream = nullptr;
  check(runtime_, runtime_.stream_create(&stream, stream_non_blocking),
        "cudaStreamCreateWithFlags");
  return stream;
}

void CudaDevice::destroy_stream(DeviceStream stream) noexcept {
  runtime_.stream_destroy(stream);
}

DeviceEvent CudaDevice::create_event() {
  void* event = nullptr;
  check(runtime_, runtime_.event_create(&event, event_disable_timing), "cudaEventCreateWithFlags");
  return event;
}

void CudaDevice::destroy_event(DeviceEvent event) noexcept {
  runtime_.event_destroy(event);
}

void CudaDevice::copy_async(std::byte* device, const std::byte* host, std::size_t bytes,
                            DeviceStream stream) {
  check(
      runtime_, runtime_.memcpy_async(device, host, bytes, memcpy_host_to_device, stream),
      "cudaMemcpyAsync of " + std::to_string(bytes) + " bytes to device " + std::to_string(index_));
}

void CudaDevice::record(DeviceEvent event, DeviceStream stream) {
  check(runtime_, runtime_.event_record(event, stream), "cudaEventRecord");
}

void CudaDevice::wait(DeviceEvent event) {
  check(runtime_, runtime_.event_synchronize(event), "cudaEventSynchronize");
}

void CudaDevice::synchronize(DeviceStream stream) {
  check(runtime_, runtime_.stream_synchronize(stream), "cudaStreamSynchronize");
}

const CastModule& CudaDevice::cast_module() {
  std::lock_guard lock(driver_mutex);
  const auto found = cast_modules.find(index_);
  if (found != cast_modules.end()) return found->second;
  CastModule& loaded = cast_modules[index_];
  const std::string where = "device casts on CUDA device " + std::to_string(index_) + ": ";
  if (device_cast_image_size == 0) {
    loaded.why = where + "this library was " + device_cast_image_missing;
    return loaded;
  }
  const CudaDriver* driver = try_driver();
  if (driver == nullptr) {
    loaded.why = where + driver_why;
    return loaded;
  }
  // cudaFree(nullptr) makes the runtime create the device's primary context and make it
  // current on this thread, if it has not yet: the module is loaded into it.
  if (const int code = runtime_.free(nullptr); code != cuda_success) {
    loaded.why = where + "cudaFree(0) failed: " + error_text(runtime_, code);
    return loaded;
  }
  void* module = nullptr;
  if (const int code = driver->module_load_data(&module, device_cast_image_bytes);
      code != cuda_success) {
    // CUDA_ERROR_NO_BINARY_FOR_GPU or CUDA_ERROR_UNSUPPORTED_PTX_VERSION: neither a cubin for
    // this GPU nor PTX this driver can compile.
    loaded.why =
        where + "cuModuleLoadData of the embedded kernels failed: " + driver_error(*driver, code);
    return loaded;
  }
  for (std::size_t k = 0; k < loaded.functions.size(); ++k) {
    if (const int code =
            driver->module_get_function(&loaded.functions[k], module, device_cast_kernel_names[k]);
        code != cuda_success) {
      loaded.why = where + "cuModuleGetFunction(" + device_cast_kernel_names[k] +
                   ") failed: " + driver_error(*driver, code);
      driver->module_unload(module);
      return loaded;
    }
  }
  return loaded;
}

bool CudaDevice::can_read_direct(bool required, std::string& why) {
  // Without nvidia-fs cuFile could only run in compatibility mode, which automatic loads do
  // not take (cufile_compat_mode); asking cuFile would open its driver on every load and
  // leave a cufile.log in the working directory.
  std::error_code ignored;
  if (!required && !std::filesystem::exists("/proc/driver/nvidia-fs", ignored)) {
    why =
        "GPUDirect Storage needs the nvidia-fs driver, which is not loaded (no "
        "/proc/driver/nvidia-fs): loads go through the pinned ring";
    return false;
  }
  const CuFile* cufile = try_cufile(why);
  if (cufile == nullptr) return false;
  std::string compat;
  if (cufile_compat_mode(*cufile, compat) && !required) {
    why = compat;
    return false;
  }
  if (!cufile_handles_) cufile_handles_ = std::make_unique<CuFileHandles>(*cufile);
  return true;
}

void CudaDevice::end_direct_reads() noexcept {
  cufile_handles_.reset();
}

bool CudaDevice::read_direct(const DirectFile& file, std::uint64_t offset, std::byte* dest,
                             std::size_t bytes, std::string& why) {
  if (!cufile_handles_) {
    why = "cuFile was not set up for this load (can_read_direct was not asked)";
    return false;
  }
  return cufile_handles_->read(file, offset, dest, bytes, why);
}

bool CudaDevice::can_cast(Dtype from, Dtype to, std::string& why) {
  if (!device_cast_kind(from, to)) {
    why = "no device kernel converts " + std::string(dtype_name(from)) + " to " +
          std::string(dtype_name(to));
    return false;
  }
  const CastModule& module = cast_module();
  why = module.why;
  return why.empty();
}

void CudaDevice::cast_async(Dtype from, const std::byte* device_in, Dtype to, std::byte* device_out,
                            std::size_t count, DeviceStream stream) {
  const std::optional<DeviceCastKind> kind = device_cast_kind(from, to);
  const CastModule& module = cast_module();
  const std::string what = std::string(dtype_name(from)) + " to " + std::string(dtype_name(to)) +
                           " cast of " + std::to_string(count) + " elements on device " +
                           std::to_string(index_);
  if (!kind || !module.why.empty()) {
    fail(ErrorCode::device, "CUDA",
         "the " + what + " cannot run: " + (kind ? module.why : "no kernel for the pair"));
  }
  if (count == 0) return;
  const void* in = device_in;
  void* out = device_out;
  unsigned long long n = count;
  F8Table table{};
  void* params[] = {&in, &out, &n, &table};
  if (*kind == DeviceCastKind::f8_to_f32 || *kind == DeviceCastKind::f8_to_16) {
    table = device_cast_table(from, to);
  }
  // 256 threads a block; the grid-stride loop covers what 4096 blocks (several per SM on
  // every GPU the kernels are built for) do not.
  constexpr unsigned block = 256;
  const auto blocks =
      static_cast<unsigned>(std::min<std::size_t>((count + block - 1) / block, 4096));
  const int code =
      loaded_driver->launch_kernel(module.functions[static_cast<std::size_t>(*kind)], blocks, 1, 1,
                                   block, 1, 1, 0, stream, params, nullptr);
  if (code != cuda_success) {
    fail(ErrorCode::device, "CUDA",
         std::string("cuLaunchKernel of ") + device_cast_kernel_names[static_cast<int>(*kind)] +
             " (the " + what + ") failed: " + driver_error(*loaded_driver, code));
  }
}

}  // namespace safetensors::detail

namespace safetensors {

CudaStatus cuda_status() {
  CudaStatus status;
  std::string why;
  const detail::CudaRuntime* runtime = detail::try_runtime(why);
  if (runtime == nullptr) {
    status.reason = why;
    return status;
  }
  status.library = runtime->library.name();
  runtime->runtime_version(&status.runtime_version);
  runtime->driver_version(&status.driver_version);
  const int code = runtime->device_count(&status.device_count);
  if (code != detail::cuda_success) {
    status.device_count = 0;
    status.reason =
        "the CUDA runtime " + status.library +
        " found no usable device: cudaGetDeviceCount failed: " + detail::error_text(*runtime, code);
  } else if (status.device_count == 0) {
    status.reason = "the CUDA runtime " + status.library + " sees no CUDA device";
  } else {
    status.available = true;
  }
  return status;
}

}  // namespace safetensors
