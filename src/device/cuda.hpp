// The CUDA runtime, loaded at run time (io/dynamic_library.hpp), and the device pipeline's
// CUDA device over it; its casts launch the embedded kernels through the CUDA driver, also
// loaded at run time. The entry points used and their C signatures are listed in
// docs/ARCHITECTURE.md ("device"); nothing here includes CUDA's headers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "device/device_api.hpp"
#include "safetensors/device.hpp"

namespace safetensors::detail {

struct CudaRuntime;
struct CastModule;
class CuFileHandles;

/// Library names tried after SAFETENSORS_CUDART and before the default sonames, e.g. the
/// copy a Python framework ships (the Python package adds torch's). Kept for the process.
void add_cuda_runtime_candidates(const std::vector<std::string>& paths);

/// The process's CUDA runtime, loaded on first success; throws Error(device) saying why the
/// CUDA path is unavailable (library, symbol, or no device).
const CudaRuntime& cuda_runtime();

/// Copies device memory back to the host (synchronously), for checks.
void cuda_copy_to_host(const CudaRuntime& runtime, void* host, const void* device,
                       std::size_t bytes);

/// Frees device memory of `device` without throwing, for deleters: errors (the runtime being
/// torn down at exit, a sticky error from an earlier fault) leave the memory to the driver.
void cuda_free_on(const CudaRuntime& runtime, int device, void* memory) noexcept;

/// Frees the pinned staging memory CUDA loads kept (release_cuda_staging in device.hpp).
std::uint64_t release_cuda_pinned_cache();

/// Device `index` of `runtime`. The constructing thread is switched to the device for the
/// object's lifetime and back afterwards; bind_thread switches other threads.
class CudaDevice final : public DeviceApi {
 public:
  CudaDevice(const CudaRuntime& runtime, int index);
  CudaDevice(const CudaDevice&) = delete;
  CudaDevice& operator=(const CudaDevice&) = delete;
  ~CudaDevice() override;

  std::string describe() const override;
  void bind_thread() override;
  std::byte* allocate(std::size_t bytes) override;
  void free(std::byte* memory) noexcept override;
  std::byte* allocate_pinned(std::size_t bytes) override;
  void free_pinned(std::byte* memory) noexcept override;
  /// The process-wide cache (cuda_pinned_cache): pinned memory is allocated portable, usable
  /// with every device, so loads on any device share it.
  PinnedCache* pinned_cache() noexcept override;
  DeviceStream create_stream() override;
  void destroy_stream(DeviceStream stream) noexcept override;
  DeviceEvent create_event() override;
  void destroy_event(DeviceEvent event) noexcept override;
  void copy_async(std::byte* device, const std::byte* host, std::size_t bytes,
                  DeviceStream stream) override;
  void record(DeviceEvent event, DeviceStream stream) override;
  void wait(DeviceEvent event) override;
  void synchronize(DeviceStream stream) override;
  /// Through the cast kernels embedded at build time (device/cast_image.hpp), loaded with the
  /// CUDA driver (libcuda.so.1, found at run time) once per device and process.
  bool can_cast(Dtype from, Dtype to, std::string& why) override;
  void cast_async(Dtype from, const std::byte* device_in, Dtype to, std::byte* device_out,
                  std::size_t count, DeviceStream stream) override;
  /// GPUDirect Storage through cuFile (device/gds.hpp), loaded at run time once per process;
  /// files are registered on first read and deregistered when this object goes.
  bool can_read_direct(bool required, std::string& why) override;
  void end_direct_reads() noexcept override;
  bool read_direct(const DirectFile& file, std::uint64_t offset, std::byte* dest, std::size_t bytes,
                   std::string& why) override;

 private:
  // This device's kernels, loaded on first use; why they cannot be used, if so.
  const CastModule& cast_module();

  const CudaRuntime& runtime_;
  int index_;
  int previous_ = -1;
  std::unique_ptr<CuFileHandles> cufile_handles_;  // created by can_read_direct
};

}  // namespace safetensors::detail
