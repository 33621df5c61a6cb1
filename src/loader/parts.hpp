// Parts of tensors (TensorSlice) as the loader reads them: their shape, checked against the
// stored tensor, and their contiguous byte runs in the file.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "safetensors/header.hpp"
#include "safetensors/loader.hpp"

namespace safetensors::detail {

/// A tensor or module name with every all-digit component after the first written `*`
/// (transformers' replace_layer_number_by_wildcard): "model.layers.3.mlp" -> "model.layers.*.mlp".
[[nodiscard]] std::string generic_name(std::string_view name);

/// The shape of `slice` of `info`. Throws invalid_slice, naming `origin` and the tensor, when
/// the dimension or a range does not fit, or when a run of a sub-byte dtype would not start or
/// end on a byte.
[[nodiscard]] std::vector<std::uint64_t> sliced_shape(std::string_view origin,
                                                      const TensorInfo& info,
                                                      const TensorSlice& slice);

/// Calls f(byte offset in the tensor's data, byte length) for every contiguous run of the
/// slice's bytes, in C order of the result (so destinations are packed one after another);
/// runs that touch in the file are merged. `slice` must have passed sliced_shape.
template <class F>
void for_each_slice_run(const TensorInfo& info, const TensorSlice& slice, F&& f) {
  const std::uint64_t bits = dtype_bits(info.dtype);
  std::uint64_t outer = 1, inner = 1;
  for (std::size_t d = 0; d < slice.dim; ++d) outer *= info.shape[d];
  for (std::size_t d = slice.dim + 1; d < info.shape.size(); ++d) inner *= info.shape[d];
  const std::uint64_t inner_bits = inner * bits;
  const std::uint64_t row_bits = info.shape[slice.dim] * inner_bits;
  std::uint64_t run_begin = 0, run_end = 0;
  bool open = false;
  for (std::uint64_t o = 0; o < outer; ++o) {
    for (const TensorSlice::Range& range : slice.ranges) {
      if (range.end == range.begin) continue;
      const std::uint64_t begin = (o * row_bits + range.begin * inner_bits) / 8;
      const std::uint64_t end = (o * row_bits + range.end * inner_bits) / 8;
      if (open && begin == run_end) {
        run_end = end;
        continue;
      }
      if (open) f(run_begin, run_end - run_begin);
      run_begin = begin;
      run_end = end;
      open = true;
    }
  }
  if (open && run_end > run_begin) f(run_begin, run_end - run_begin);
}

}  // namespace safetensors::detail
