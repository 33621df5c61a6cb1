#include <algorithm>
#include <cstring>
#include <string>

#include "format/slice_runs.hpp"
#include "safetensors/error.hpp"
#include "safetensors/slice.hpp"

namespace safetensors {
namespace {

std::string tensor_label(std::string_view tensor_name) {
  return "tensor `" + std::string(tensor_name) + "`";
}

// |v| for a negative v without overflowing on INT64_MIN.
std::uint64_t magnitude(std::int64_t v) {
  return static_cast<std::uint64_t>(-(v + 1)) + 1;
}

// Python's slice.indices() for one bound and a positive step.
std::uint64_t clamp_bound(std::optional<std::int64_t> bound, std::uint64_t size,
                          std::uint64_t absent) {
  if (!bound) return absent;
  if (*bound < 0) {
    const std::uint64_t back = magnitude(*bound);
    return back >= size ? 0 : size - back;
  }
  return std::min(static_cast<std::uint64_t>(*bound), size);
}

SlicePlan::Dim resolve(std::string_view tensor_name, std::size_t dim, std::uint64_t size,
                       const SliceArg& arg) {
  if (arg.kind == SliceArg::Kind::index) {
    const bool negative = arg.index < 0;
    const std::uint64_t back = negative ? magnitude(arg.index) : 0;
    if (negative ? back > size : static_cast<std::uint64_t>(arg.index) >= size) {
      throw Error(ErrorCode::invalid_slice,
                  tensor_label(tensor_name) + ": index " + std::to_string(arg.index) +
                      " is out of range for dimension " + std::to_string(dim) + " of size " +
                      std::to_string(size));
    }
    const std::uint64_t at = negative ? size - back : static_cast<std::uint64_t>(arg.index);
    return {at, 1, 1, false};
  }
  if (arg.step <= 0) {
    throw Error(ErrorCode::invalid_slice, tensor_label(tensor_name) + ": slice step " +
                                              std::to_string(arg.step) + " in dimension " +
                                              std::to_string(dim) + " must be positive");
  }
  const auto step = static_cast<std::uint64_t>(arg.step);
  const std::uint64_t start = clamp_bound(arg.start, size, 0);
  const std::uint64_t stop = clamp_bound(arg.stop, size, size);
  const std::uint64_t count = stop > start ? (stop - start - 1) / step + 1 : 0;
  return {start, count, step, true};
}

void check_byte_aligned(std::string_view tensor_name, Dtype dtype,
                        const detail::RunLayout& layout) {
  const unsigned bits = dtype_bits(dtype);
  if (bits % 8 == 0 || layout.run_count == 0) return;
  // Every run starts at base plus a sum of strides, so checking these checks them all.
  bool aligned = (layout.base * bits) % 8 == 0 && (layout.run * bits) % 8 == 0;
  for (const auto& o : layout.outer) aligned = aligned && (o.stride * bits) % 8 == 0;
  if (aligned) return;
  std::string where = "runs of " + std::to_string(layout.run) + " elements starting at element " +
                      std::to_string(layout.base);
  for (const auto& o : layout.outer) {
    where += ", repeated every " + std::to_string(o.stride) + " elements";
  }
  throw Error(ErrorCode::invalid_slice,
              tensor_label(tensor_name) + ": " + std::string(dtype_name(dtype)) + " packs " +
                  std::to_string(bits) +
                  "-bit elements, so every contiguous run of a slice must start and end on a "
                  "byte boundary, but this slice selects " +
                  where);
}

template <std::size_t N>
void copy_fixed_runs(const detail::RunLayout& layout, const std::byte* src, std::byte* dst) {
  detail::for_each_run(layout, [&](std::uint64_t s, std::uint64_t d, std::uint64_t) {
    std::memcpy(dst + d, src + s, N);
  });
}

}  // namespace

namespace detail {

RunLayout run_layout(const SlicePlan& plan, std::span<const std::uint64_t> shape) {
  const std::size_t n = shape.size();
  RunLayout layout;
  for (const auto& d : plan.dims) {
    if (d.count == 0) return layout;
  }
  std::vector<std::uint64_t> stride(n, 1);
  for (std::size_t i = n; i-- > 1;) stride[i - 1] = stride[i] * shape[i];
  for (std::size_t i = 0; i < n; ++i) layout.base += plan.dims[i].start * stride[i];

  // The trailing dimensions taken whole are one block; the dimension before them extends
  // the block when it advances by one.
  std::size_t j = n;
  layout.run = 1;
  while (j > 0 && plan.dims[j - 1].start == 0 && plan.dims[j - 1].count == shape[j - 1]) {
    layout.run *= shape[--j];
  }
  if (j > 0 && plan.dims[j - 1].step == 1) {
    layout.run *= plan.dims[--j].count;
  }
  layout.run_count = 1;
  for (std::size_t i = 0; i < j; ++i) {
    const auto& d = plan.dims[i];
    if (d.count == 1) continue;
    layout.outer.push_back({d.count, d.step * stride[i]});
    layout.run_count *= d.count;
  }
  return layout;
}

RunLayout byte_layout(const SlicePlan& plan, Dtype dtype, std::span<const std::uint64_t> shape) {
  RunLayout layout = run_layout(plan, shape);
  const unsigned bits = dtype_bits(dtype);
  layout.base = layout.base * bits / 8;
  layout.run = layout.run * bits / 8;
  for (auto& o : layout.outer) o.stride = o.stride * bits / 8;
  return layout;
}

}  // namespace detail

SlicePlan plan_slice(std::string_view tensor_name, Dtype dtype,
                     std::span<const std::uint64_t> shape, std::span<const SliceArg> args) {
  if (args.size() > shape.size()) {
    throw Error(ErrorCode::invalid_slice, tensor_label(tensor_name) + ": " +
                                              std::to_string(args.size()) +
                                              " slice arguments for a tensor of " +
                                              std::to_string(shape.size()) + " dimensions");
  }
  if (byte_size(dtype, shape).problem == SizeProblem::overflow) {
    throw Error(ErrorCode::overflow,
                tensor_label(tensor_name) + ": the shape's bit count overflows 64 bits");
  }
  SlicePlan plan;
  plan.dims.reserve(shape.size());
  for (std::size_t i = 0; i < shape.size(); ++i) {
    const SlicePlan::Dim dim = i < args.size() ? resolve(tensor_name, i, shape[i], args[i])
                                               : SlicePlan::Dim{0, shape[i], 1, true};
    plan.dims.push_back(dim);
    if (dim.keep) plan.shape.push_back(dim.count);
  }
  const detail::RunLayout layout = detail::run_layout(plan, shape);
  check_byte_aligned(tensor_name, dtype, layout);
  plan.contiguous = layout.run_count <= 1;
  return plan;
}

void copy_slice(const SlicePlan& plan, Dtype dtype, std::span<const std::uint64_t> shape,
                std::span<const std::byte> source, std::span<std::byte> out) {
  const ByteSize whole = byte_size(dtype, shape);
  if (plan.dims.size() != shape.size() || !whole || source.size() != whole.bytes) {
    throw Error(ErrorCode::invalid_argument,
                "copy_slice: the source holds " + std::to_string(source.size()) +
                    " bytes, which is not a whole tensor of the planned shape");
  }
  const detail::RunLayout layout = detail::byte_layout(plan, dtype, shape);
  const std::uint64_t needed = layout.run_count * layout.run;
  if (out.size() != needed) {
    throw Error(ErrorCode::invalid_argument, "copy_slice: the slice is " + std::to_string(needed) +
                                                 " bytes but the output buffer holds " +
                                                 std::to_string(out.size()));
  }
  const std::byte* src = source.data();
  std::byte* dst = out.data();
  // Short runs (a strided innermost dimension) get a fixed-size copy the compiler inlines.
  switch (layout.run) {
    case 1:
      return copy_fixed_runs<1>(layout, src, dst);
    case 2:
      return copy_fixed_runs<2>(layout, src, dst);
    case 4:
      return copy_fixed_runs<4>(layout, src, dst);
    case 8:
      return copy_fixed_runs<8>(layout, src, dst);
    default:
      detail::for_each_run(layout, [&](std::uint64_t s, std::uint64_t d, std::uint64_t len) {
        std::memcpy(dst + d, src + s, len);
      });
  }
}

}  // namespace safetensors
