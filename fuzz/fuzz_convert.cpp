// libFuzzer target for conversion planning: any input is taken as a PyTorch checkpoint (zip
// or legacy), a .npy or an .npz over a memory source, planned, and every planned tensor is
// gathered from its storage. Only safetensors::Error may escape, and what is accepted must
// hold together: storages of the planned size, every element a view reaches inside its
// storage, output within the planner's cap. Anything else is a bug.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "../src/convert/copy.hpp"
#include "../src/convert/plan.hpp"
#include "require.hpp"
#include "safetensors/error.hpp"
#include "safetensors/source.hpp"

namespace {

using fuzz::require;

void gather_all(const safetensors::detail::ConvertPlan& plan, std::size_t input_size) {
  using safetensors::detail::element_size;
  std::uint64_t total = 0;
  for (const auto& item : plan.items) total += item.bytes;
  // The planner caps the output at 16 times the input (or of 1 MiB for tiny inputs).
  require(total / 16 <= std::max<std::uint64_t>(input_size, std::uint64_t{1} << 20),
          "output beyond the planner's cap");
  std::vector<std::byte> out;
  for (const auto& item : plan.items) {
    const std::uint64_t storage_bytes = plan.storage_bytes.at(item.storage);
    const safetensors::detail::StorageBytes storage = plan.load(item.storage);
    require(storage.size() == storage_bytes, "storage size differs from the plan");
    if (item.bytes == 0) continue;
    const std::uint64_t el = element_size(item.dtype);
    require(el > 0 && item.bytes % el == 0, "tensor bytes not whole elements");
    const std::uint64_t last = safetensors::detail::element_position(item, item.bytes / el - 1);
    require((last + 1) * el <= storage_bytes, "a view reaches past its storage");
    out.resize(static_cast<std::size_t>(item.bytes));
    safetensors::detail::gather(item, storage.bytes(), 0, out);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  const auto source = safetensors::make_memory_source(bytes, "fuzz.pt");
  try {
    const auto plan = safetensors::detail::plan_conversion(*source, "fuzz", "");
    gather_all(plan, size);
  } catch (const safetensors::Error&) {
  }
  return 0;
}
