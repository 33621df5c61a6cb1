// Tensors for the device tests (device_test.cpp, fake_cuda_test.cpp): every dtype the loader
// casts or carries, in sizes that split into many staging slots.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "safetensors/dtype.hpp"
#include "safetensors/writer.hpp"

namespace safetensors::test {

inline std::vector<std::byte> random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 random(seed);
  std::vector<std::byte> out(n);
  for (auto& b : out) b = static_cast<std::byte>(random());
  return out;
}

// Every dtype the loader casts or carries, sizes that split into many slots, odd counts, an
// empty tensor and a scalar.
inline std::vector<TensorData> sample_tensors(std::vector<std::vector<std::byte>>& storage) {
  struct Spec {
    const char* name;
    Dtype dtype;
    std::vector<std::uint64_t> shape;
  };
  const std::vector<Spec> specs = {
      {"embed.weight", Dtype::F32, {1537, 513}},  // about 3 MiB
      {"layers.0.attn.weight", Dtype::F32, {33, 17}},
      {"layers.0.norm.weight", Dtype::F16, {100003}},
      {"layers.1.attn.weight", Dtype::BF16, {129, 651}},
      {"layers.1.norm.weight", Dtype::F32, {7}},
      {"layers.10.attn.weight", Dtype::F8_E4M3, {40999}},
      {"layers.2.scale", Dtype::F8_E5M2, {333}},
      {"layers.3.e8m0", Dtype::F8_E8M0, {65}},
      {"positions", Dtype::I64, {10000}},
      {"counts", Dtype::U32, {77}},
      {"small", Dtype::I16, {5}},
      {"mask", Dtype::BOOL, {13}},
      {"double", Dtype::F64, {50001}},
      {"empty", Dtype::F32, {0, 4}},
      {"scalar", Dtype::F32, {}},
  };
  std::vector<TensorData> data;
  storage.clear();
  storage.reserve(specs.size());
  for (const Spec& spec : specs) {
    storage.push_back(random_bytes(byte_size(spec.dtype, spec.shape).bytes,
                                   static_cast<unsigned>(storage.size() + 7)));
    if (spec.dtype == Dtype::BOOL) {
      for (auto& b : storage.back()) b &= std::byte{1};
    }
    data.push_back(TensorData::from_bytes(spec.name, spec.dtype, spec.shape, storage.back()));
  }
  return data;
}

}  // namespace safetensors::test
