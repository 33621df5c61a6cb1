// A resolved slice seen as a set of equally long contiguous runs of the source tensor,
// shared by the in-memory copy (slice.cpp) and the positional reads of File::slice.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "safetensors/dtype.hpp"
#include "safetensors/slice.hpp"

namespace safetensors::detail {

/// Runs start at `base + sum(i_k * outer[k].stride)` for every i_k < outer[k].count and are
/// `run` long. Units are whatever the layout was computed in (elements, bits or bytes).
struct RunLayout {
  struct Outer {
    std::uint64_t count = 0;
    std::uint64_t stride = 0;
  };
  std::uint64_t base = 0;
  std::uint64_t run = 0;
  std::uint64_t run_count = 0;  // 0 for an empty selection
  std::vector<Outer> outer;     // only dimensions with count > 1, outermost first

  /// One past the end of the last run (base when the selection is empty).
  std::uint64_t end() const noexcept {
    if (run_count == 0) return base;
    std::uint64_t last = base;
    for (const Outer& o : outer) last += (o.count - 1) * o.stride;
    return last + run;
  }
};

/// The layout in elements of the selection `plan` makes in a tensor of `shape`.
[[nodiscard]] RunLayout run_layout(const SlicePlan& plan, std::span<const std::uint64_t> shape);

/// The layout in bytes; `plan` must come from plan_slice, which checked byte alignment.
[[nodiscard]] RunLayout byte_layout(const SlicePlan& plan, Dtype dtype,
                                    std::span<const std::uint64_t> shape);

/// Calls f(source_offset, destination_offset, length) for every run, in C order, with
/// destination offsets packed from 0.
template <class F>
void for_each_run(const RunLayout& layout, F&& f) {
  if (layout.run_count == 0) return;
  if (layout.outer.empty()) {
    f(layout.base, std::uint64_t{0}, layout.run);
    return;
  }
  // An odometer over the outer dimensions; the innermost one is a plain loop.
  const std::size_t depth = layout.outer.size();
  const RunLayout::Outer inner = layout.outer.back();
  std::vector<std::uint64_t> index(depth, 0);
  std::uint64_t src = layout.base;
  std::uint64_t dst = 0;
  for (;;) {
    std::uint64_t s = src;
    for (std::uint64_t k = 0; k < inner.count; ++k, s += inner.stride, dst += layout.run) {
      f(s, dst, layout.run);
    }
    std::size_t d = depth - 1;
    for (;;) {
      if (d == 0) return;
      --d;
      src += layout.outer[d].stride;
      if (++index[d] < layout.outer[d].count) break;
      src -= layout.outer[d].count * layout.outer[d].stride;
      index[d] = 0;
    }
  }
}

}  // namespace safetensors::detail
