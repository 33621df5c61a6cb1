// Memory for measurements: 64-byte aligned and touched once, so that page faults of fresh
// memory are not part of what is timed. Shared by `safetensors bench` and bench/.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <new>

namespace safetensors::tools {

struct AlignedFree {
  void operator()(std::byte* p) const noexcept { ::operator delete[](p, std::align_val_t{64}); }
};
using TouchedBuffer = std::unique_ptr<std::byte[], AlignedFree>;

/// `size` bytes, 64-byte aligned, every page already written.
inline TouchedBuffer make_touched_buffer(std::size_t size) {
  TouchedBuffer buffer(static_cast<std::byte*>(::operator new[](size, std::align_val_t{64})));
  std::memset(buffer.get(), 1, size);
  return buffer;
}

}  // namespace safetensors::tools
