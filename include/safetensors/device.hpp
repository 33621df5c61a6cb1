// Loading checkpoints straight into GPU memory: parallel reads into a small ring of pinned
// host buffers, asynchronous host-to-device copies overlapping the reads, optional dtype
// conversion on the way (on the device, by kernels built in with nvcc, or on the host). The CUDA
// runtime is found at run time (dlopen); nothing links to it, and without it every entry point says
// why the device path is unavailable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "safetensors/checkpoint.hpp"
#include "safetensors/export.hpp"
#include "safetensors/loader.hpp"

namespace safetensors {

/// Whether the CUDA path can be used in this process, and if not, why.
struct SAFETENSORS_API CudaStatus {
  bool available = false;
  /// Empty when available; else one sentence: which libraries were tried and what each said,
  /// a missing symbol, or the runtime's own answer to cudaGetDeviceCount.
  std::string reason;
  std::string library;  // the CUDA runtime file loaded, when one was
  int device_count = 0;
  int runtime_version = 0;  // as cudaRuntimeGetVersion gives it, e.g. 12040
  int driver_version = 0;   // as cudaDriverGetVersion gives it
};

/// Loads the CUDA runtime on first use (the library named by the environment variable
/// SAFETENSORS_CUDART if set, else libcudart.so.13, .12, .11.0, libcudart.so) and asks it for
/// devices. A failed attempt is not remembered: a later call tries again.
[[nodiscard]] SAFETENSORS_API CudaStatus cuda_status();

/// Whether GPUDirect Storage (NVIDIA's cuFile, file bytes DMA'd straight into device memory)
/// can be used in this process, and if not, why.
struct SAFETENSORS_API GdsStatus {
  /// The cuFile library loaded and its driver opened (cuFileDriverOpen).
  bool available = false;
  /// cuFile would read through the host itself (no nvidia-fs driver, no supported file
  /// system, or forced): slower than the pinned ring, so automatic loads do not use it.
  bool compat_mode = false;
  /// Empty when available and not in compatibility mode; else one sentence: the libraries
  /// tried and what each said, a missing symbol, cuFileDriverOpen's error, or why the mode is
  /// compatibility.
  std::string reason;
  std::string library;  // the cuFile library loaded, when one was
};

/// Loads cuFile on first use (the library named by the environment variable
/// SAFETENSORS_CUFILE if set, else libcufile.so.0, libcufile.so) and opens its driver, kept
/// open for the process. A failed attempt is not remembered: a later call tries again.
[[nodiscard]] SAFETENSORS_API GdsStatus gds_status();

/// Whether a device load reads tensors stored as loaded (no conversion) from their files
/// straight into device memory (GPUDirect Storage), bypassing the pinned ring. Converting
/// pieces, and sources without a file descriptor, always go through the ring.
enum class DirectReads {
  // When the device can and it is worthwhile: cuFile loaded, not in compatibility mode. A
  // file cuFile refuses to register is read through the ring (DeviceLoadStats::direct_reason).
  automatic,
  off,
  // Whenever cuFile can be used at all, compatibility mode included; else the load fails with
  // Error(device) saying why.
  on,
};

/// Where a device load converts dtypes. On the device, a converting piece is staged and copied
/// as stored, then converted by a kernel (no host CPU spent converting; fewer bytes copied when
/// the cast widens, more when it narrows); on the host, it is converted into the pinned
/// buffer. Both give the same bits: the CPU casts' (torch 2's .to()).
enum class CastOn {
  // Widening and same-size casts on the device when it can (kernels built in and loadable),
  // narrowing ones on the host: either way the fewer bytes cross the bus. Unmeasured on a GPU
  // yet (bench/gpu check 3b times both placements).
  automatic,
  host,
  device,  // on the device, or the load fails (Error(device) saying why it cannot)
};

/// How a device load runs. Pinned host memory is `slots * slot_bytes`, never more than
/// `max_pinned_bytes`, whatever the checkpoint's size. By default that memory is kept after
/// the load for the next one (`keep_pinned`): at most one such block per process, until
/// release_cuda_staging().
struct SAFETENSORS_API DeviceLoadOptions {
  /// Reading threads; 0 = hardware concurrency.
  unsigned threads = 0;
  /// Bytes of one pinned staging buffer (one host-to-device copy at most).
  std::size_t slot_bytes = std::size_t{8} << 20;
  /// Staging buffers in the ring; 0 = three per thread, at least 4, within max_pinned_bytes.
  unsigned slots = 0;
  std::size_t max_pinned_bytes = std::size_t{256} << 20;
  /// Copy streams; the workers share them round-robin.
  unsigned streams = 2;
  /// How shard bytes are read into the staging buffers (mmap copies from a mapping).
  LoadMethod method = LoadMethod::automatic;
  /// Where conversions run; a piece whose destination is not aligned to its element (only with
  /// a caller's unaligned device pointer) is converted on the host whatever this says.
  CastOn cast_on = CastOn::automatic;
  /// Called from worker threads with (bytes staged, bytes total); must be thread-safe.
  std::function<void(std::uint64_t, std::uint64_t)> progress;
  /// Keep this load's pinned ring afterwards (when it is at most `max_pinned_bytes`), so that
  /// the next load reuses it instead of pinning memory again; false frees it when the load
  /// ends. A load reuses a kept block large enough for its ring whatever this says; one too
  /// small is freed before the larger ring is pinned. Concurrent loads: one gets the kept
  /// block, the others pin their own, and at most one block stays afterwards.
  bool keep_pinned = true;
  /// GPUDirect Storage for the pieces loaded as stored (see DirectReads).
  DirectReads direct = DirectReads::automatic;
};

/// What a device load did, for benchmarks to tell what limits it.
struct SAFETENSORS_API DeviceLoadStats {
  std::uint64_t bytes_read = 0;    // from the shards
  std::uint64_t bytes_copied = 0;  // host to device
  std::uint64_t copies = 0;        // asynchronous copies issued
  std::uint64_t pinned_bytes = 0;  // the ring's pinned memory
  /// Destination bytes written by device casts, and the source bytes copied for them (part of
  /// bytes_copied): bytes_copied - bytes_staged_for_device_casts + bytes_cast_on_device is the
  /// plan's buffer size.
  std::uint64_t bytes_cast_on_device = 0;
  std::uint64_t bytes_staged_for_device_casts = 0;
  std::uint64_t bytes_cast_on_host = 0;  // destination bytes converted on the host
  std::uint64_t casts = 0;               // kernels launched
  /// Device memory the converting pieces were staged in (one region per slot), while loading.
  std::uint64_t device_staging_bytes = 0;
  /// When the load converted anything on the host: why not on the device.
  std::string host_cast_reason;
  unsigned threads = 0;
  unsigned slots = 0;
  double seconds = 0;            // the whole load, wall clock
  double read_seconds = 0;       // summed over workers: reading (and casting) into slots
  double slot_wait_seconds = 0;  // summed over workers: waiting for a free slot
  double drain_seconds = 0;      // after the last read, waiting for the last copies
  /// The ring was the pinned memory an earlier load kept (nothing was pinned for this one).
  bool pinned_reused = false;
  double pinned_alloc_seconds = 0;  // pinning the ring (cudaHostAlloc); 0 when reused
  /// Bytes read from files straight into device memory (part of bytes_read; not staged, not
  /// copied), and the reads that did it.
  std::uint64_t bytes_read_direct = 0;
  std::uint64_t direct_reads = 0;
  /// When pieces loaded as stored went through the ring: why not directly (direct reads off,
  /// unavailable and why, or a file cuFile refused).
  std::string direct_reason;
};

/// Frees the pinned staging memory that CUDA loads kept for the next load (DeviceLoadOptions::
/// keep_pinned); returns the bytes freed, 0 when none was kept. Loads running now are not
/// affected: their ring is theirs until they end, and the next load pins memory anew. Without
/// a call the memory is kept until the process exits, and not freed then: at exit the CUDA
/// runtime may already be gone, and the system takes the memory back anyway.
SAFETENSORS_API std::uint64_t release_cuda_staging();

/// Loads the plan's tensors into device memory at `device_pointer` (at least
/// `plan.buffer_size` bytes, `device_bytes` of them usable, on CUDA device `device`), each at
/// its plan offset, converted as the plan says. Returns when every byte is on the device.
/// Throws Error(device) when the CUDA path is unavailable (with cuda_status's reason) or a
/// CUDA call fails, and the loader's errors otherwise; in-flight copies are waited for first.
SAFETENSORS_API DeviceLoadStats load_to_cuda(const Checkpoint& checkpoint, const LoadPlan& plan,
                                             void* device_pointer, std::uint64_t device_bytes,
                                             int device, const DeviceLoadOptions& options = {});

/// Tensors loaded into one device allocation the library owns (cudaMalloc of exactly the
/// plan's size), freed when the last copy of this object goes.
class SAFETENSORS_API CudaCheckpoint {
 public:
  const std::vector<LoadedTensor>& tensors() const noexcept { return plan_.tensors; }
  /// The device address of a tensor's first byte.
  void* device_pointer(const LoadedTensor& tensor) const noexcept {
    return static_cast<std::byte*>(memory_.get()) + tensor.offset;
  }
  void* device_buffer() const noexcept { return memory_.get(); }
  std::uint64_t buffer_size() const noexcept { return plan_.buffer_size; }
  int device() const noexcept { return device_; }
  const DeviceLoadStats& stats() const noexcept { return stats_; }

 private:
  friend CudaCheckpoint load_to_cuda(const Checkpoint&, const LoadOptions&, int,
                                     const DeviceLoadOptions&);
  LoadPlan plan_;
  std::shared_ptr<void> memory_;
  int device_ = 0;
  DeviceLoadStats stats_;
};

/// Plans with `options` (names, pattern, dtype), allocates on `device` and loads.
[[nodiscard]] SAFETENSORS_API CudaCheckpoint
load_to_cuda(const Checkpoint& checkpoint, const LoadOptions& options, int device,
             const DeviceLoadOptions& device_options = {});

}  // namespace safetensors
