// The device casts: one kernel per conversion (cast_ops.hpp), each a grid-stride loop from a
// device staging buffer (the piece's bytes as stored) into the destination. Compiled by nvcc
// into a fatbin that the library embeds (cmake/embed_file.cmake) and loads through the CUDA
// driver at run time (cuda.cpp); nothing links to CUDA. Pointers are aligned to their element
// size (the pipeline places staged pieces so, and casts on the host otherwise).
#include "device/cast_ops.hpp"

namespace {

using safetensors::detail::F8Table;

template <class Op>
__device__ void grid_stride(const Op& op, const void* in, void* out, unsigned long long count) {
  const auto* source = static_cast<const typename Op::In*>(in);
  auto* dest = static_cast<typename Op::Out*>(out);
  const unsigned long long step = static_cast<unsigned long long>(gridDim.x) * blockDim.x;
  for (unsigned long long i =
           static_cast<unsigned long long>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < count; i += step) {
    dest[i] = op(source[i]);
  }
}

// The table goes from the parameter space (read in place: __grid_constant__) into shared
// memory, where the data-dependent lookups are cheap.
template <class Result>
__device__ void table_lookup(const F8Table& table, const void* in, void* out,
                             unsigned long long count) {
  __shared__ std::uint32_t shared[256];
  for (unsigned i = threadIdx.x; i < 256; i += blockDim.x) shared[i] = table.value[i];
  __syncthreads();
  grid_stride(safetensors::detail::F8Lookup<Result>{shared}, in, out, count);
}

}  // namespace

// The names are cast_ops.hpp's device_cast_kernel_names.
extern "C" __global__ void safetensors_cast_f32_to_f16(const void* in, void* out,
                                                       unsigned long long count) {
  grid_stride(safetensors::detail::F32ToF16{}, in, out, count);
}
extern "C" __global__ void safetensors_cast_f32_to_bf16(const void* in, void* out,
                                                        unsigned long long count) {
  grid_stride(safetensors::detail::F32ToBf16{}, in, out, count);
}
extern "C" __global__ void safetensors_cast_f16_to_f32(const void* in, void* out,
                                                       unsigned long long count) {
  grid_stride(safetensors::detail::F16ToF32{}, in, out, count);
}
extern "C" __global__ void safetensors_cast_bf16_to_f32(const void* in, void* out,
                                                        unsigned long long count) {
  grid_stride(safetensors::detail::Bf16ToF32{}, in, out, count);
}
extern "C" __global__ void safetensors_cast_f16_to_bf16(const void* in, void* out,
                                                        unsigned long long count) {
  grid_stride(safetensors::detail::F16ToBf16{}, in, out, count);
}
extern "C" __global__ void safetensors_cast_bf16_to_f16(const void* in, void* out,
                                                        unsigned long long count) {
  grid_stride(safetensors::detail::Bf16ToF16{}, in, out, count);
}
extern "C" __global__ void safetensors_cast_f8_to_f32(const void* in, void* out,
                                                      unsigned long long count,
                                                      const __grid_constant__ F8Table table) {
  table_lookup<std::uint32_t>(table, in, out, count);
}
extern "C" __global__ void safetensors_cast_f8_to_16(const void* in, void* out,
                                                     unsigned long long count,
                                                     const __grid_constant__ F8Table table) {
  table_lookup<std::uint16_t>(table, in, out, count);
}
