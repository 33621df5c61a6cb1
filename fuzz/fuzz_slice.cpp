// libFuzzer target for slicing: the input chooses a small tensor (dtype, shape) and the slice
// arguments; the tensor is written into a file, opened, and sliced through a mapped source
// (zero-copy views) and an unmapped one (covering reads). A naive oracle, Python's rules
// element by element, says what must be refused and what every accepted slice holds.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "reader.hpp"
#include "require.hpp"
#include "safetensors/error.hpp"
#include "safetensors/file.hpp"
#include "safetensors/slice.hpp"
#include "safetensors/source.hpp"
#include "safetensors/writer.hpp"

namespace {

using fuzz::Reader;
using fuzz::require;
using safetensors::SliceArg;

// An in-memory source that is not mapped, so File::slice takes its read path.
class UnmappedSource : public safetensors::Source {
 public:
  explicit UnmappedSource(std::span<const std::byte> bytes) : bytes_(bytes) {}
  std::uint64_t size() const noexcept override { return bytes_.size(); }
  void read_at(std::uint64_t offset, std::span<std::byte> out) const override {
    require(offset <= bytes_.size() && out.size() <= bytes_.size() - offset,
            "a slice read outside the file");
    std::copy_n(bytes_.begin() + static_cast<std::ptrdiff_t>(offset), out.size(), out.begin());
  }
  const std::string& name() const noexcept override { return name_; }

 private:
  std::span<const std::byte> bytes_;
  std::string name_ = "unmapped";
};

// A bound: usually small (in and around the dimension), sometimes near the int64 limits.
std::int64_t bound(Reader& in, bool huge) {
  const auto small = static_cast<std::int8_t>(in.byte());
  if (!huge) return small;
  return small < 0 ? INT64_MIN + (small + 128) : INT64_MAX - small;
}

// The positions one argument selects in a dimension of `size`, by Python's rules; nullopt
// when Python refuses it.
std::optional<std::vector<std::uint64_t>> positions(const SliceArg& arg, std::uint64_t size) {
  const auto n = static_cast<std::int64_t>(size);
  if (arg.kind == SliceArg::Kind::index) {
    const std::int64_t i = arg.index < 0 && arg.index >= -n ? arg.index + n : arg.index;
    if (i < 0 || i >= n) return std::nullopt;
    return std::vector<std::uint64_t>{static_cast<std::uint64_t>(i)};
  }
  if (arg.step <= 0) return std::nullopt;
  const auto clamp = [n](std::optional<std::int64_t> b, std::int64_t absent) {
    if (!b) return absent;
    if (*b < 0) return *b < -n ? std::int64_t{0} : *b + n;
    return std::min(*b, n);
  };
  std::vector<std::uint64_t> out;
  for (std::int64_t p = clamp(arg.start, 0), stop = clamp(arg.stop, n); p < stop;) {
    out.push_back(static_cast<std::uint64_t>(p));
    if (arg.step > stop - p) break;
    p += arg.step;
  }
  return out;
}

struct Expected {
  std::vector<std::uint64_t> shape;
  std::vector<std::uint64_t> elements;  // flat indices into the tensor, in output order
};

std::optional<Expected> oracle(std::span<const std::uint64_t> shape,
                               std::span<const SliceArg> args) {
  if (args.size() > shape.size()) return std::nullopt;
  Expected out;
  std::vector<std::vector<std::uint64_t>> chosen;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    const SliceArg arg = d < args.size() ? args[d] : SliceArg::all();
    auto p = positions(arg, shape[d]);
    if (!p) return std::nullopt;
    if (arg.kind == SliceArg::Kind::range) out.shape.push_back(p->size());
    chosen.push_back(std::move(*p));
  }
  // Every combination in C order (the last dimension fastest).
  std::vector<std::size_t> at(shape.size(), 0);
  if (std::any_of(chosen.begin(), chosen.end(), [](const auto& c) { return c.empty(); })) {
    return out;
  }
  while (true) {
    std::uint64_t flat = 0;
    for (std::size_t d = 0; d < shape.size(); ++d) flat = flat * shape[d] + chosen[d][at[d]];
    out.elements.push_back(flat);
    std::size_t d = shape.size();
    while (d > 0 && ++at[d - 1] == chosen[d - 1].size()) at[--d] = 0;
    if (d == 0) return out;
  }
}

unsigned bit(std::span<const std::byte> bytes, std::uint64_t i) {
  return (static_cast<unsigned>(bytes[i / 8]) >> (i % 8)) & 1u;
}

// Element by element: bytes for whole-byte dtypes, bit by bit for packed ones.
void compare(const safetensors::SlicedTensor& got, const Expected& want, unsigned bits,
             std::span<const std::byte> tensor) {
  require(got.shape() == want.shape, "slice shape differs from the oracle");
  require(got.bytes().size() * 8 == want.elements.size() * bits,
          "slice byte count differs from the oracle");
  const std::uint64_t width = bits / 8;
  for (std::size_t k = 0; k < want.elements.size(); ++k) {
    if (bits % 8 == 0) {
      require(std::equal(got.bytes().begin() + static_cast<std::ptrdiff_t>(k * width),
                         got.bytes().begin() + static_cast<std::ptrdiff_t>((k + 1) * width),
                         tensor.begin() + static_cast<std::ptrdiff_t>(want.elements[k] * width)),
              "slice element differs from the oracle");
      continue;
    }
    for (unsigned b = 0; b < bits; ++b) {
      require(bit(got.bytes(), k * bits + b) == bit(tensor, want.elements[k] * bits + b),
              "slice element differs from the oracle");
    }
  }
}

// Packed dtypes: a run of consecutive elements that starts or ends inside a byte cannot be
// copied as bytes, so the library must refuse it (it may refuse more, never less).
bool has_unaligned_run(const Expected& want, unsigned bits) {
  for (std::size_t k = 0; k < want.elements.size(); ++k) {
    const bool starts = k == 0 || want.elements[k - 1] + 1 != want.elements[k];
    const bool ends = k + 1 == want.elements.size() || want.elements[k] + 1 != want.elements[k + 1];
    if (starts && want.elements[k] * bits % 8 != 0) return true;
    if (ends && (want.elements[k] + 1) * bits % 8 != 0) return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace st = safetensors;
  Reader in(data, size);
  const auto dtypes = st::all_dtypes();
  const st::Dtype dtype = dtypes[in.byte() % dtypes.size()];
  const unsigned bits = st::dtype_bits(dtype);
  std::vector<std::uint64_t> shape(in.byte() % 5);
  for (auto& d : shape) {
    // Mostly 0 to 6; rarely 4096 or more, so that rows pass the 16 KiB File::slice weighs a
    // read call at and an unmapped source is read run by run rather than with one cover.
    const std::uint8_t b = in.byte();
    d = b >= 250 ? 4096u + (b - 250u) : b % 7u;
  }
  std::vector<SliceArg> args(in.byte() % (shape.size() + 2));
  for (SliceArg& arg : args) {
    const std::uint8_t control = in.byte();
    const bool huge = (control & 8) != 0;
    if (control & 1) {
      arg = SliceArg::at(bound(in, huge));
    } else {
      const std::optional<std::int64_t> start =
          control & 2 ? std::optional(bound(in, huge)) : std::nullopt;
      const std::optional<std::int64_t> stop =
          control & 4 ? std::optional(bound(in, huge)) : std::nullopt;
      // Mostly 1 to 4; 0 and negative steps must be refused.
      const auto step = static_cast<std::int8_t>(in.byte());
      arg = SliceArg::range(start, stop, step > 4 ? step % 4 + 1 : step);
    }
  }
  const st::ByteSize byte_size = st::byte_size(dtype, shape);
  // Packed shapes of a bit count the writer refuses, and tensors too large to check quickly.
  if (!byte_size || byte_size.bytes > (std::uint64_t{1} << 18)) return 0;
  std::vector<std::byte> tensor(byte_size.bytes);
  // Input bytes mixed with the position, so that a read from the wrong place shows even
  // where the input has run out.
  for (std::size_t i = 0; i < tensor.size(); ++i) {
    tensor[i] = static_cast<std::byte>(in.byte() + i * 151 + (i >> 8) * 7);
  }
  const std::byte lead_bytes[8] = {};
  const std::vector tensors{st::TensorData::from_bytes("a", st::Dtype::U64, {1}, lead_bytes),
                            st::TensorData::from_bytes("t", dtype, shape, tensor)};
  const std::vector<std::byte> file_bytes = st::write_to_buffer(tensors);

  const std::optional<Expected> want = oracle(shape, args);
  const std::shared_ptr<const st::Source> sources[] = {
      st::make_memory_source(file_bytes, "mapped"), std::make_shared<UnmappedSource>(file_bytes)};
  for (const auto& source : sources) {
    const st::File file = st::File::from_source(source);
    try {
      const st::SlicedTensor got = file.slice("t", args);
      require(want.has_value(), "a slice Python refuses was accepted");
      require(!has_unaligned_run(*want, bits),
              "a packed slice with a run off a byte boundary was accepted");
      compare(got, *want, bits, tensor);
    } catch (const st::Error& e) {
      require(e.code() == st::ErrorCode::invalid_slice, "a slice failed with another error");
      // Packed dtypes may refuse more than the oracle's runs show, never a whole-byte slice.
      require(!want || (bits % 8 != 0 && !want->elements.empty()),
              "a slice Python accepts was refused");
    }
  }
  return 0;
}
