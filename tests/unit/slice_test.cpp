#include "safetensors/slice.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "safetensors/error.hpp"
#include "safetensors/file.hpp"
#include "test_files.hpp"

namespace safetensors {
namespace {

using Shape = std::vector<std::uint64_t>;
using Args = std::vector<SliceArg>;

// ---- A naive reference: Python's rules written out, then nested loops over positions. ----

std::vector<std::int64_t> positions(const SliceArg& arg, std::int64_t size) {
  if (arg.kind == SliceArg::Kind::index) return {arg.index < 0 ? arg.index + size : arg.index};
  auto bound = [&](std::optional<std::int64_t> b, std::int64_t absent) {
    if (!b) return absent;
    std::int64_t v = *b;
    if (v < 0) v = std::max<std::int64_t>(v + size, 0);
    return std::min(v, size);
  };
  std::vector<std::int64_t> out;
  for (std::int64_t i = bound(arg.start, 0); i < bound(arg.stop, size); i += arg.step) {
    out.push_back(i);
  }
  return out;
}

struct Expected {
  Shape shape;
  std::vector<std::uint64_t> flat;  // selected element indices in C order
};

Expected reference(const Shape& shape, const Args& args) {
  std::vector<std::vector<std::int64_t>> pos;
  Expected e;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    const SliceArg arg = d < args.size() ? args[d] : SliceArg::all();
    pos.push_back(positions(arg, static_cast<std::int64_t>(shape[d])));
    if (arg.kind == SliceArg::Kind::range) e.shape.push_back(pos.back().size());
  }
  std::vector<std::size_t> at(shape.size(), 0);
  // Odometer-free recursion keeps the reference obviously right.
  auto walk = [&](auto&& self, std::size_t d, std::uint64_t flat) -> void {
    if (d == shape.size()) {
      e.flat.push_back(flat);
      return;
    }
    for (std::int64_t p : pos[d])
      self(self, d + 1, flat * shape[d] + static_cast<std::uint64_t>(p));
  };
  walk(walk, 0, 0);
  return e;
}

bool consecutive(const std::vector<std::uint64_t>& flat) {
  for (std::size_t i = 1; i < flat.size(); ++i) {
    if (flat[i] != flat[i - 1] + 1) return false;
  }
  return true;
}

std::vector<std::int32_t> iota_values(const Shape& shape) {
  std::uint64_t n = 1;
  for (auto d : shape) n *= d;
  std::vector<std::int32_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

std::vector<std::int32_t> as_i32(std::span<const std::byte> bytes) {
  std::vector<std::int32_t> out(bytes.size() / 4);
  if (!bytes.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

std::string describe(const Args& args) {
  std::string s = "[";
  for (const auto& a : args) {
    if (a.kind == SliceArg::Kind::index) {
      s += std::to_string(a.index);
    } else {
      if (a.start) s += std::to_string(*a.start);
      s += ':';
      if (a.stop) s += std::to_string(*a.stop);
      s += ':';
      s += std::to_string(a.step);
    }
    s += ',';
  }
  s += ']';
  return s;
}

// Compares plan_slice + copy_slice with the reference for one slice of an I32 iota tensor.
void check_against_reference(const Shape& shape, const Args& args) {
  SCOPED_TRACE(describe(args));
  const Expected want = reference(shape, args);
  const SlicePlan plan = plan_slice("t", Dtype::I32, shape, args);
  ASSERT_EQ(plan.shape, want.shape);
  EXPECT_EQ(plan.contiguous, consecutive(want.flat));
  const auto values = iota_values(shape);
  std::vector<std::byte> out(want.flat.size() * 4);
  copy_slice(plan, Dtype::I32, shape, std::as_bytes(std::span(values)), out);
  const auto got = as_i32(out);
  ASSERT_EQ(got.size(), want.flat.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(static_cast<std::uint64_t>(got[i]), want.flat[i]) << "element " << i;
  }
}

// Per-dimension choices, covering indices, negative indices, steps 1..3, open bounds,
// clamping past either end and empty ranges.
std::vector<SliceArg> choices(std::int64_t size) {
  return {SliceArg::all(),
          SliceArg::at(0),
          SliceArg::at(size - 1),
          SliceArg::at(-1),
          SliceArg::at(-size),
          SliceArg::range(1, 3),
          SliceArg::range(std::nullopt, std::nullopt, 2),
          SliceArg::range(std::nullopt, std::nullopt, 3),
          SliceArg::range(-3, std::nullopt),
          SliceArg::range(1, 100, 3),
          SliceArg::range(-100, 2),
          SliceArg::range(3, 1),
          SliceArg::range(std::nullopt, -1, 2),
          SliceArg::range(size, std::nullopt)};
}

TEST(PlanSlice, ThreeDimensionalMatchesReference) {
  const Shape shape{4, 5, 6};
  int checked = 0;
  for (const auto& a : choices(4)) {
    for (const auto& b : choices(5)) {
      for (const auto& c : choices(6)) {
        check_against_reference(shape, {a, b, c});
        ++checked;
      }
      check_against_reference(shape, {a, b});  // trailing dimension taken whole
    }
    check_against_reference(shape, {a});
  }
  check_against_reference(shape, {});
  EXPECT_EQ(checked, 14 * 14 * 14);
}

TEST(PlanSlice, FourDimensionalMatchesReference) {
  const Shape shape{3, 2, 4, 5};
  const std::vector<SliceArg> few{SliceArg::all(),
                                  SliceArg::at(-1),
                                  SliceArg::at(1),
                                  SliceArg::range(1, std::nullopt),
                                  SliceArg::range(std::nullopt, std::nullopt, 2),
                                  SliceArg::range(0, 1),
                                  SliceArg::range(2, 2)};
  for (const auto& a : few) {
    for (const auto& b : few) {
      for (const auto& c : few) {
        for (const auto& d : few) {
          check_against_reference(shape, {a, b, c, d});
        }
        check_against_reference(shape, {a, b, c});
      }
    }
  }
}

TEST(PlanSlice, ResolvesDimensions) {
  const Shape shape{10, 8};
  const SlicePlan plan = plan_slice("t", Dtype::F32, shape,
                                    Args{SliceArg::at(-2), SliceArg::range(1, std::nullopt, 3)});
  ASSERT_EQ(plan.dims.size(), 2u);
  EXPECT_EQ(plan.dims[0].start, 8u);
  EXPECT_EQ(plan.dims[0].count, 1u);
  EXPECT_FALSE(plan.dims[0].keep);
  EXPECT_EQ(plan.dims[1].start, 1u);
  EXPECT_EQ(plan.dims[1].count, 3u);  // 1, 4, 7
  EXPECT_EQ(plan.dims[1].step, 3u);
  EXPECT_TRUE(plan.dims[1].keep);
  EXPECT_EQ(plan.shape, Shape{3});
  EXPECT_FALSE(plan.contiguous);
}

TEST(PlanSlice, ExtremeBoundsClamp) {
  constexpr auto lo = std::numeric_limits<std::int64_t>::min();
  constexpr auto hi = std::numeric_limits<std::int64_t>::max();
  const Shape shape{5};
  auto plan = plan_slice("t", Dtype::U8, shape, Args{SliceArg::range(lo, hi)});
  EXPECT_EQ(plan.shape, Shape{5});
  EXPECT_TRUE(plan.contiguous);
  plan = plan_slice("t", Dtype::U8, shape, Args{SliceArg::range(hi, lo)});
  EXPECT_EQ(plan.shape, Shape{0});
  plan = plan_slice("t", Dtype::U8, shape, Args{SliceArg::range(std::nullopt, std::nullopt, hi)});
  EXPECT_EQ(plan.shape, Shape{1});
}

TEST(PlanSlice, ZeroDimensional) {
  const Shape scalar{};
  const SlicePlan plan = plan_slice("s", Dtype::I32, scalar, Args{});
  EXPECT_TRUE(plan.shape.empty());
  EXPECT_TRUE(plan.contiguous);
  const std::int32_t value = 42;
  std::vector<std::byte> out(4);
  copy_slice(plan, Dtype::I32, scalar, std::as_bytes(std::span(&value, 1)), out);
  EXPECT_EQ(as_i32(out), std::vector<std::int32_t>{42});
  try {
    (void)plan_slice("s", Dtype::I32, scalar, Args{SliceArg::all()});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_slice);
  }
}

TEST(PlanSlice, EmptyDimension) {
  const Shape shape{0, 3};
  check_against_reference(shape, {});
  check_against_reference(shape, {SliceArg::range(1, 5), SliceArg::at(2)});
  EXPECT_THROW((void)plan_slice("t", Dtype::I32, shape, Args{SliceArg::at(0)}), Error);
}

std::string rejection(const Shape& shape, const Args& args, Dtype dtype = Dtype::I32) {
  try {
    (void)plan_slice("weights", dtype, shape, args);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_slice) << e.what();
    EXPECT_NE(std::string(e.what()).find("weights"), std::string::npos) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "accepted " << describe(args);
  return {};
}

void expect_mentions(const std::string& message, std::initializer_list<const char*> parts) {
  for (const char* p : parts)
    EXPECT_NE(message.find(p), std::string::npos) << message << " / " << p;
}

TEST(PlanSlice, Rejections) {
  const Shape shape{4, 7};
  expect_mentions(rejection(shape, {SliceArg::all(), SliceArg::at(7)}),
                  {"index 7", "dimension 1", "size 7"});
  expect_mentions(rejection(shape, {SliceArg::at(-5)}), {"index -5", "dimension 0", "size 4"});
  expect_mentions(rejection(shape, {SliceArg::at(std::numeric_limits<std::int64_t>::min())}),
                  {"dimension 0"});
  expect_mentions(rejection(shape, {SliceArg::range(0, 2, 0)}), {"step 0", "dimension 0"});
  expect_mentions(rejection(shape, {SliceArg::all(), SliceArg::range(0, 2, -1)}),
                  {"step -1", "dimension 1"});
  expect_mentions(rejection(shape, {SliceArg::all(), SliceArg::all(), SliceArg::all()}),
                  {"3 slice arguments", "2 dimensions"});
}

// ---- Sub-byte dtypes: selected runs must be whole bytes. ----

// Bit i of element e of a packed tensor, LSB-first; the numbering does not matter as long
// as it is the same here and in the check, since accepted runs are whole bytes.
std::vector<std::byte> select_bits(std::span<const std::byte> src, unsigned bits,
                                   const std::vector<std::uint64_t>& flat) {
  std::vector<std::byte> out(flat.size() * bits / 8);
  std::uint64_t o = 0;
  for (std::uint64_t e : flat) {
    for (unsigned b = 0; b < bits; ++b, ++o) {
      const std::uint64_t i = e * bits + b;
      const bool bit = (std::to_integer<unsigned>(src[i / 8]) >> (i % 8)) & 1;
      if (bit) out[o / 8] |= static_cast<std::byte>(1u << (o % 8));
    }
  }
  return out;
}

void check_sub_byte(Dtype dtype, const Shape& shape, const Args& args, bool accepted) {
  SCOPED_TRACE(std::string(dtype_name(dtype)) + describe(args));
  if (!accepted) {
    const std::string why = rejection(shape, args, dtype);
    expect_mentions(why, {dtype_name(dtype).data(), "byte boundary"});
    return;
  }
  const SlicePlan plan = plan_slice("t", dtype, shape, args);
  const Expected want = reference(shape, args);
  const unsigned bits = dtype_bits(dtype);
  std::vector<std::byte> src(byte_size(dtype, shape).bytes);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<std::byte>(i * 37 + 11);
  std::vector<std::byte> out(want.flat.size() * bits / 8);
  copy_slice(plan, dtype, shape, src, out);
  EXPECT_EQ(out, select_bits(src, bits, want.flat));
}

TEST(PlanSlice, SubByteRunsMustBeWholeBytes) {
  using A = SliceArg;
  const Shape f4{4, 6};  // rows of 24 bits
  check_sub_byte(Dtype::F4, f4, {A::at(1)}, true);
  check_sub_byte(Dtype::F4, f4, {A::range(1, 3)}, true);
  check_sub_byte(Dtype::F4, f4, {A::range(0, 4, 2)}, true);
  check_sub_byte(Dtype::F4, f4, {A::all(), A::range(0, 2)}, true);
  check_sub_byte(Dtype::F4, f4, {A::all(), A::range(2, 6)}, true);
  check_sub_byte(Dtype::F4, f4, {A::all(), A::range(1, 3)}, false);  // starts mid-byte
  check_sub_byte(Dtype::F4, f4, {A::all(), A::range(0, 3)}, false);  // ends mid-byte
  check_sub_byte(Dtype::F4, f4, {A::all(), A::range(0, 6, 2)}, false);
  check_sub_byte(Dtype::F4, f4, {A::at(0), A::at(0)}, false);
  const Shape f4odd{3, 3};  // rows of 12 bits: only the whole tensor is whole bytes
  check_sub_byte(Dtype::F4, Shape{2, 3}, {A::all()}, true);
  check_sub_byte(Dtype::F4, f4odd, {A::at(1)}, false);
  check_sub_byte(Dtype::F4, Shape{4, 3}, {A::range(0, 2)}, true);      // one run of 24 bits
  check_sub_byte(Dtype::F4, Shape{4, 3}, {A::range(0, 4, 2)}, false);  // runs of 12 bits
  check_sub_byte(Dtype::F4, Shape{4, 3}, {A::range(1, 3)}, false);
  check_sub_byte(Dtype::F4, Shape{4, 3}, {A::all(), A::range(0, 2)}, false);  // rows 12 bits apart
  check_sub_byte(Dtype::F4, Shape{4, 3}, {A::range(0, 4, 2), A::range(0, 2)}, true);

  const Shape f6{4, 4};  // rows of 24 bits
  for (Dtype d : {Dtype::F6_E2M3, Dtype::F6_E3M2}) {
    check_sub_byte(d, f6, {A::at(2)}, true);
    check_sub_byte(d, f6, {A::range(1, 3)}, true);
    check_sub_byte(d, f6, {A::all(), A::range(0, 4)}, true);
    check_sub_byte(d, f6, {A::all(), A::range(0, 2)}, false);
    check_sub_byte(d, f6, {A::range(0, 1), A::range(2, 4)}, false);
    check_sub_byte(d, Shape{8}, {A::range(4, 8)}, true);
    check_sub_byte(d, Shape{8}, {A::range(2, 6)}, false);
  }
}

TEST(CopySlice, RejectsWrongBufferSizes) {
  const Shape shape{2, 3};
  const auto values = iota_values(shape);
  const SlicePlan plan = plan_slice("t", Dtype::I32, shape, Args{SliceArg::at(1)});
  std::vector<std::byte> out(12);
  const auto src = std::as_bytes(std::span(values));
  std::vector<std::byte> wrong(11);
  try {
    copy_slice(plan, Dtype::I32, shape, src, wrong);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
  }
  EXPECT_THROW(copy_slice(plan, Dtype::I32, shape, src.first(20), out), Error);
  copy_slice(plan, Dtype::I32, shape, src, out);
  EXPECT_EQ(as_i32(out), (std::vector<std::int32_t>{3, 4, 5}));
}

// ---- File::slice over both backends ----

std::string i32_header(const std::string& name, const Shape& shape, std::uint64_t bytes) {
  std::string dims;
  for (auto d : shape) {
    if (!dims.empty()) dims += ',';
    dims += std::to_string(d);
  }
  return "{\"" + name + "\":{\"dtype\":\"I32\",\"shape\":[" + dims + "],\"data_offsets\":[0," +
         std::to_string(bytes) + "]}}";
}

struct I32File {
  explicit I32File(const Shape& shape)
      : values(iota_values(shape)),
        bytes(test::file_bytes(i32_header("x", shape, values.size() * 4),
                               std::as_bytes(std::span(values)))),
        scratch("slice", bytes) {}
  std::vector<std::int32_t> values;
  std::vector<std::byte> bytes;
  test::ScratchFile scratch;
};

TEST(FileSlice, ZeroCopyWhenContiguousOnMappedFiles) {
  const Shape shape{6, 4, 3};
  I32File f(shape);
  const File mapped = File::open(f.scratch.path(), Backend::mmap);
  const File pread = File::open(f.scratch.path(), Backend::pread);
  const File memory = File::from_source(make_memory_source(f.bytes, "memory"));
  const std::vector<Args> cases = {
      {SliceArg::range(2, 4)},
      {SliceArg::at(1)},
      {SliceArg::at(-1), SliceArg::range(1, 3)},
      {SliceArg::at(2), SliceArg::at(3), SliceArg::at(0)},
      {},
      {SliceArg::all(), SliceArg::at(1)},
      {SliceArg::range(std::nullopt, std::nullopt, 2)},
      {SliceArg::all(), SliceArg::all(), SliceArg::range(0, 3, 2)},
  };
  for (const auto& args : cases) {
    SCOPED_TRACE(describe(args));
    const Expected want = reference(shape, args);
    const bool contiguous = consecutive(want.flat);
    for (const File* file : {&mapped, &memory, &pread}) {
      const SlicedTensor s = file->slice("x", args);
      EXPECT_EQ(s.dtype(), Dtype::I32);
      EXPECT_EQ(s.shape(), want.shape);
      EXPECT_EQ(s.is_view(), contiguous && file != &pread);
      const auto got = as_i32(s.bytes());
      ASSERT_EQ(got.size(), want.flat.size());
      for (std::size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(static_cast<std::uint64_t>(got[i]), want.flat[i]);
      }
      if (s.is_view()) {
        const auto whole = file->view("x").data;
        EXPECT_GE(s.bytes().data(), whole.data());
        EXPECT_LE(s.bytes().data() + s.bytes().size(), whole.data() + whole.size());
      }
    }
  }
}

TEST(FileSlice, ErrorsNameTheFile) {
  I32File f(Shape{2, 2});
  const File file = File::open(f.scratch.path());
  try {
    file.slice("x", Args{SliceArg::at(2)});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_slice);
    expect_mentions(e.what(), {f.scratch.path().c_str(), "`x`", "index 2"});
  }
  try {
    file.slice("y", Args{});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::tensor_not_found);
  }
}

TEST(FileSlice, PreadReadsOnlyWhatTheSliceNeeds) {
  const Shape shape{16, 16384};  // rows of 64 KiB
  I32File f(shape);
  auto recorder = std::make_shared<test::RecordingSource>(open_pread_source(f.scratch.path()));
  const File file = File::from_source(recorder);
  const std::uint64_t data_start = file.header().data_start;
  const std::uint64_t row = 16384 * 4;

  recorder->clear();
  auto rows = file.slice("x", Args{SliceArg::range(2, 4)});
  EXPECT_EQ(
      recorder->reads(),
      (std::vector<std::pair<std::uint64_t, std::uint64_t>>{{data_start + 2 * row, 2 * row}}));
  EXPECT_EQ(as_i32(rows.bytes())[0], 2 * 16384);

  recorder->clear();
  auto column = file.slice("x", Args{SliceArg::all(), SliceArg::at(5)});
  EXPECT_EQ(recorder->bytes_read(), 16u * 4);  // one small read per row
  const auto got = as_i32(column.bytes());
  for (int r = 0; r < 16; ++r) EXPECT_EQ(got[r], r * 16384 + 5);

  recorder->clear();
  auto strided = file.slice("x", Args{SliceArg::at(3), SliceArg::range(0, 100, 3)});
  EXPECT_EQ(recorder->reads().size(), 1u);  // gaps are cheaper than 34 reads
  EXPECT_LE(recorder->bytes_read(), 100u * 4);
  const auto s = as_i32(strided.bytes());
  ASSERT_EQ(s.size(), 34u);
  for (int i = 0; i < 34; ++i) EXPECT_EQ(s[i], 3 * 16384 + 3 * i);
}

}  // namespace
}  // namespace safetensors
