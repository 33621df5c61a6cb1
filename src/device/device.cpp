// The public device API (safetensors/device.hpp) over the pipeline and the CUDA device.
#include "safetensors/device.hpp"

#include "device/cuda.hpp"
#include "device/pipeline.hpp"

namespace safetensors {

std::uint64_t release_cuda_staging() {
  return detail::release_cuda_pinned_cache();
}

DeviceLoadStats load_to_cuda(const Checkpoint& checkpoint, const LoadPlan& plan,
                             void* device_pointer, std::uint64_t device_bytes, int device,
                             const DeviceLoadOptions& options) {
  detail::CudaDevice cuda(detail::cuda_runtime(), device);
  return detail::run_device_load(cuda, checkpoint, plan, static_cast<std::byte*>(device_pointer),
                                 device_bytes, options);
}

CudaCheckpoint load_to_cuda(const Checkpoint& checkpoint, const LoadOptions& options, int device,
                            const DeviceLoadOptions& device_options) {
  const detail::CudaRuntime& runtime = detail::cuda_runtime();
  CudaCheckpoint loaded;
  loaded.plan_ = plan_load(checkpoint, options);
  loaded.device_ = device;
  {
    detail::CudaDevice cuda(runtime, device);
    // One allocation of exactly the tensors' bytes (cudaMalloc aligns it to 256 bytes).
    std::byte* memory = cuda.allocate(static_cast<std::size_t>(loaded.plan_.buffer_size));
    loaded.memory_ = std::shared_ptr<void>(
        memory, [&runtime, device](void* p) { detail::cuda_free_on(runtime, device, p); });
  }
  loaded.stats_ = load_to_cuda(checkpoint, loaded.plan_, loaded.memory_.get(),
                               loaded.plan_.buffer_size, device, device_options);
  return loaded;
}

}  // namespace safetensors
