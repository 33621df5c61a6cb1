// The writer against headers worked out by hand from FORMAT.md "Writing", the rejections of
// plan_write, round trips through the reader's parser and streaming from producers.
#include "safetensors/writer.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "expect_error.hpp"
#include "safetensors/error.hpp"
#include "safetensors/header.hpp"
#include "test_files.hpp"

namespace safetensors {
namespace {

using namespace std::string_literals;
using namespace std::string_view_literals;

std::string to_string(std::span<const std::byte> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

std::span<const std::byte> bytes_of(std::string_view s) {
  return std::as_bytes(std::span(s));
}

std::string written(const std::vector<TensorData>& tensors, const WriteOptions& options = {}) {
  return to_string(write_to_buffer(tensors, options));
}

std::string read_whole_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

using test::expect_error;

TEST(Writer, OneF32Tensor) {
  const std::string data(24, '\x5a');
  const std::vector tensors{TensorData::from_bytes("a", Dtype::F32, {2, 3}, bytes_of(data))};
  // 57 bytes of JSON; 8 + 57 rounds up to 72, so N = 64 with 7 spaces.
  const std::string expected =
      "\x40\0\0\0\0\0\0\0"s
      R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})"
      "       " +
      data;
  EXPECT_EQ(written(tensors), expected);
}

TEST(Writer, OrdersByDtypeThenName) {
  const auto u = "\x08\x07\x06\x05\x04\x03\x02\x01"sv;
  const auto a = "\x00\x00\x80\x3f"sv;  // 1.0f
  const auto b = "\x00\x00\x00\x40"sv;  // 2.0f
  const auto h = "\x80\x3f\x00\x40"sv;  // bf16 1.0, 2.0
  const auto flag = "\x01"sv;
  const std::vector tensors{
      TensorData::from_bytes("flag", Dtype::BOOL, {1}, bytes_of(flag)),
      TensorData::from_bytes("b", Dtype::F32, {1}, bytes_of(b)),
      TensorData::from_bytes("h", Dtype::BF16, {2}, bytes_of(h)),
      TensorData::from_bytes("u", Dtype::U64, {1}, bytes_of(u)),
      TensorData::from_bytes("a", Dtype::F32, {1}, bytes_of(a)),
  };
  // 278 bytes of JSON; 8 + 278 = 286 rounds up to 288: N = 280 = 0x118, 2 spaces.
  const std::string expected =
      "\x18\x01\0\0\0\0\0\0"s
      R"({"u":{"dtype":"U64","shape":[1],"data_offsets":[0,8]},)"
      R"("a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},)"
      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]},)"
      R"("h":{"dtype":"BF16","shape":[2],"data_offsets":[16,20]},)"
      R"("flag":{"dtype":"BOOL","shape":[1],"data_offsets":[20,21]}})"
      "  "
      "\x08\x07\x06\x05\x04\x03\x02\x01"
      "\x00\x00\x80\x3f"
      "\x00\x00\x00\x40"
      "\x80\x3f\x00\x40"
      "\x01"s;
  EXPECT_EQ(written(tensors), expected);

  const WritePlan plan = plan_write(tensors);
  EXPECT_EQ(plan.order, (std::vector<std::size_t>{3, 4, 1, 2, 0}));
  EXPECT_EQ(plan.begin, (std::vector<std::uint64_t>{20, 12, 16, 0, 8}));
  EXPECT_EQ(plan.data_size, 21u);
  EXPECT_EQ(plan.file_size(), 8u + 280u + 21u);
}

TEST(Writer, MetadataWithOneKey) {
  const auto x = "\x07\x09"sv;
  const std::vector tensors{TensorData::from_bytes("x", Dtype::U8, {2}, bytes_of(x))};
  WriteOptions options;
  options.metadata = Metadata{{"format", "pt"}};
  // 84 bytes of JSON: N = 88 = 0x58 with 4 spaces.
  const std::string expected =
      "\x58\0\0\0\0\0\0\0"s
      R"({"__metadata__":{"format":"pt"},"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})"
      "    "
      "\x07\x09";
  EXPECT_EQ(written(tensors, options), expected);
}

TEST(Writer, MetadataKeysAreSortedBytewise) {
  WriteOptions options;
  options.metadata = Metadata{{"b", "2"}, {"a", "1"}, {"C", "3"}};
  // 42 bytes of JSON: N = 48 = 0x30 with 6 spaces.
  const std::string expected =
      "\x30\0\0\0\0\0\0\0"s
      R"({"__metadata__":{"C":"3","a":"1","b":"2"}})"
      "      ";
  EXPECT_EQ(written({}, options), expected);
}

TEST(Writer, EmptyMetadataIsWritten) {
  WriteOptions options;
  options.metadata = Metadata{};
  // 19 bytes of JSON: N = 24 = 0x18 with 5 spaces.
  EXPECT_EQ(written({}, options),
            "\x18\0\0\0\0\0\0\0"s
            R"({"__metadata__":{}})"
            "     ");

  const auto x = "\xff"sv;
  const std::vector tensors{TensorData::from_bytes("x", Dtype::I8, {1}, bytes_of(x))};
  // 71 bytes of JSON: N = 72 = 0x48 with 1 space.
  EXPECT_EQ(written(tensors, options),
            "\x48\0\0\0\0\0\0\0"s
            R"({"__metadata__":{},"x":{"dtype":"I8","shape":[1],"data_offsets":[0,1]}})"
            " "
            "\xff");
}

TEST(Writer, ZeroTensorsWithoutMetadata) {
  EXPECT_EQ(written({}), "\x08\0\0\0\0\0\0\0{}      "s);
}

TEST(Writer, ScalarHasEmptyShape) {
  const std::string data(8, '\x11');
  const std::vector tensors{TensorData::from_bytes("s", Dtype::F64, {}, bytes_of(data))};
  // 53 bytes of JSON: N = 56 = 0x38 with 3 spaces.
  EXPECT_EQ(written(tensors),
            "\x38\0\0\0\0\0\0\0"s
            R"({"s":{"dtype":"F64","shape":[],"data_offsets":[0,8]}})"
            "   " +
                data);
}

TEST(Writer, EmptyTensorOccupiesNoBytes) {
  const auto f = "\x01\x02\x03\x04"sv;
  const std::vector tensors{
      TensorData::from_bytes("f", Dtype::F32, {1}, bytes_of(f)),
      TensorData::from_bytes("e", Dtype::F32, {0}, {}),
  };
  // 107 bytes of JSON: N = 112 = 0x70 with 5 spaces.
  EXPECT_EQ(written(tensors),
            "\x70\0\0\0\0\0\0\0"s
            R"({"e":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
            R"("f":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})"
            "     "
            "\x01\x02\x03\x04");
}

TEST(Writer, EscapesNamesAndMetadataLikeTheReference) {
  // Every control character but NUL, which FORMAT.md refuses.
  const std::string weird = "q\"b\\s\b\t\n\f\r\x1f\x10\x01\x7f/\xc3\xa9\xe6\x97\xa5"s;
  const std::vector tensors{
      TensorData::from_bytes("\xc3\xa9", Dtype::U8, {0}, {}),
      TensorData::from_bytes("z", Dtype::U8, {0}, {}),
      TensorData::from_bytes(weird, Dtype::U8, {0}, {}),
  };
  WriteOptions options;
  options.metadata = Metadata{{"k\n", "v\"\x01\xc3\xa9"}};
  // Bytewise order: 'q' (0x71) < 'z' (0x7a) < 0xc3. 236 bytes of JSON: N = 240 = 0xf0.
  const std::string expected =
      "\xf0\0\0\0\0\0\0\0"s
      R"({"__metadata__":{"k\n":"v\"\u0001)"
      "\xc3\xa9"
      R"("},"q\"b\\s\b\t\n\f\r\u001f\u0010\u0001)"
      "\x7f/\xc3\xa9\xe6\x97\xa5"
      R"(":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},)"
      R"("z":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},)"
      "\"\xc3\xa9\""
      R"(:{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})"
      "    ";
  EXPECT_EQ(written(tensors, options), expected);
}

TEST(Writer, LargerAlignmentPadsTheHeaderOnly) {
  const std::string data(24, '\x33');
  const std::vector tensors{TensorData::from_bytes("a", Dtype::F32, {2, 3}, bytes_of(data))};
  WriteOptions options;
  options.alignment = 4096;
  // 57 bytes of JSON padded to N = 4088 = 0xff8, so 8 + N = 4096; 4031 spaces.
  const std::string expected =
      "\xf8\x0f\0\0\0\0\0\0"s
      R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})" +
      std::string(4031, ' ') + data;
  const std::string out = written(tensors, options);
  EXPECT_EQ(out, expected);
  EXPECT_EQ(out.size(), 4096u + 24u);
}

// FORMAT.md: spaces after the JSON until 8 + N is a multiple of the alignment, and none when
// it already is. Names of 1 to 16 bytes take 8 + len(JSON) through every residue modulo 8
// (and modulo 16) twice; each alignment is checked against the rule worked out here.
TEST(Writer, PadsEveryResidueToTheAlignment) {
  const std::string data(1, '\x7f');
  std::set<std::uint64_t> residues;
  for (const std::uint64_t alignment : {8u, 16u, 64u, 4096u}) {
    for (std::size_t length = 1; length <= 16; ++length) {
      const std::string name(length, 'n');
      SCOPED_TRACE("alignment " + std::to_string(alignment) + ", name of " +
                   std::to_string(length) + " bytes");
      const std::string json =
          "{\"" + name + R"(":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
      const std::uint64_t spaces = (alignment - (8 + json.size()) % alignment) % alignment;
      if (alignment == 8) residues.insert((8 + json.size()) % 8);
      const std::uint64_t n = json.size() + spaces;
      std::string expected(8, '\0');
      for (int i = 0; i < 8; ++i) expected[i] = static_cast<char>(n >> (8 * i));
      expected += json + std::string(spaces, ' ') + data;

      WriteOptions options;
      options.alignment = alignment;
      const std::vector tensors{TensorData::from_bytes(name, Dtype::U8, {1}, bytes_of(data))};
      const std::string out = written(tensors, options);
      EXPECT_EQ(out, expected);
      EXPECT_EQ((8 + n) % alignment, 0u);
      EXPECT_LT(spaces, alignment);
      EXPECT_EQ(plan_write(tensors, options).header, expected.substr(0, 8 + n));
    }
  }
  EXPECT_EQ(residues.size(), 8u) << "some residue modulo 8 was not tried";
}

TEST(Writer, SubByteDtypes) {
  const auto e3 = "abcdef"sv, e2 = "ghi"sv, f4 = "jk"sv;
  const std::vector tensors{
      TensorData::from_bytes("f4", Dtype::F4, {2, 2}, bytes_of(f4)),
      TensorData::from_bytes("e2", Dtype::F6_E2M3, {4}, bytes_of(e2)),
      TensorData::from_bytes("e3", Dtype::F6_E3M2, {1, 8}, bytes_of(e3)),
  };
  // 175 bytes of JSON: N = 176 = 0xb0 with 1 space.
  EXPECT_EQ(written(tensors),
            "\xb0\0\0\0\0\0\0\0"s
            R"({"e3":{"dtype":"F6_E3M2","shape":[1,8],"data_offsets":[0,6]},)"
            R"("e2":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[6,9]},)"
            R"("f4":{"dtype":"F4","shape":[2,2],"data_offsets":[9,11]}})"
            " "
            "abcdefghijk");
}

TEST(WriterRejects, DuplicateNames) {
  const std::vector tensors{
      TensorData::from_bytes("w", Dtype::U8, {0}, {}),
      TensorData::from_bytes("v", Dtype::U8, {0}, {}),
      TensorData::from_bytes("w", Dtype::F32, {0}, {}),
  };
  expect_error([&] { (void)plan_write(tensors); }, ErrorCode::duplicate_key, {"\"w\""});
}

TEST(WriterRejects, TensorNamedMetadata) {
  const std::vector tensors{TensorData::from_bytes("__metadata__", Dtype::U8, {0}, {})};
  expect_error([&] { (void)plan_write(tensors); }, ErrorCode::invalid_argument, {"__metadata__"});
}

// Readers refuse these (FORMAT.md), so the writer never produces them.
TEST(WriterRejects, NulInNameOrMetadata) {
  const std::vector named{TensorData::from_bytes("a\0b"s, Dtype::U8, {0}, {})};
  expect_error([&] { (void)plan_write(named); }, ErrorCode::nul_character, {"\"a\\u0000b\""});
  const std::vector<TensorData> none;
  WriteOptions options;
  options.metadata = Metadata{{"k\0"s, "v"}};
  expect_error([&] { (void)plan_write(none, options); }, ErrorCode::nul_character,
               {"\"k\\u0000\"", "key"});
  options.metadata = Metadata{{"k", "v\0"s}};
  expect_error([&] { (void)plan_write(none, options); }, ErrorCode::nul_character,
               {"\"k\"", "value"});
}

TEST(WriterRejects, MoreDimensionsThanReadersAccept) {
  const std::vector at_limit{TensorData::from_bytes(
      "w", Dtype::U8, std::vector<std::uint64_t>(max_rank, 1), bytes_of("x"))};
  EXPECT_NO_THROW((void)plan_write(at_limit));
  const std::vector above{TensorData::from_bytes(
      "w", Dtype::U8, std::vector<std::uint64_t>(max_rank + 1, 1), bytes_of("x"))};
  expect_error([&] { (void)plan_write(above); }, ErrorCode::too_many_dimensions, {"\"w\"", "64"});
}

// The reader refuses a header that is not UTF-8, so the writer must not write one: a file
// it wrote and nothing can open is a second verdict on the same bytes (found by
// fuzz_roundtrip). Surrogates, overlong forms and stray bytes, in names and in metadata.
TEST(WriterRejects, TextThatIsNotUtf8) {
  for (const std::string& bad : {"\xed\xa0\x80"s, "\xed\xbf\xbf"s, "\xc0\x80"s, "\xff"s,
                                 "\xf4\x90\x80\x80"s, "ok\xe2\x82"s}) {
    SCOPED_TRACE(::testing::PrintToString(bad));
    const std::vector named{TensorData::from_bytes(bad, Dtype::U8, {0}, {})};
    expect_error([&] { (void)plan_write(named); }, ErrorCode::invalid_argument,
                 {"not valid UTF-8"});
    const std::vector plain{TensorData::from_bytes("t", Dtype::U8, {0}, {})};
    for (const Metadata& metadata : {Metadata{{bad, "v"}}, Metadata{{"k", bad}}}) {
      WriteOptions options;
      options.metadata = metadata;
      expect_error([&] { (void)plan_write(plain, options); }, ErrorCode::invalid_argument,
                   {"metadata", "not valid UTF-8"});
    }
  }
  // The code points around the refused ones are written and read back.
  const std::vector edges{
      TensorData::from_bytes("\xed\x9f\xbf\xee\x80\x80\xf4\x8f\xbf\xbf", Dtype::U8, {0}, {})};
  EXPECT_EQ(parse_file_header(write_to_buffer(edges), "edges").tensors.at(0).name,
            "\xed\x9f\xbf\xee\x80\x80\xf4\x8f\xbf\xbf");
}

TEST(WriterRejects, ShapeOverflow) {
  const std::vector elements{TensorData::from_bytes(
      "big", Dtype::U8, {std::uint64_t{1} << 32, std::uint64_t{1} << 32}, {})};
  expect_error([&] { (void)plan_write(elements); }, ErrorCode::overflow, {"\"big\"", "4294967296"});
  // The element count fits, the bit count does not.
  const std::vector bits{TensorData::from_bytes("bits", Dtype::F32, {std::uint64_t{1} << 62}, {})};
  expect_error([&] { (void)plan_write(bits); }, ErrorCode::overflow, {"\"bits\""});
}

TEST(WriterRejects, SubByteMisaligned) {
  const auto two = "ab"sv;
  const std::vector f4{TensorData::from_bytes("f4", Dtype::F4, {3}, bytes_of(two))};
  expect_error([&] { (void)plan_write(f4); }, ErrorCode::misaligned, {"\"f4\"", "F4"});
  const std::vector f6{TensorData::from_bytes("f6", Dtype::F6_E3M2, {2, 1}, bytes_of(two))};
  expect_error([&] { (void)plan_write(f6); }, ErrorCode::misaligned, {"\"f6\"", "F6_E3M2"});
}

TEST(WriterRejects, BorrowedBytesOfTheWrongLength) {
  const std::string data(20, 'x');
  const std::vector tensors{TensorData::from_bytes("m", Dtype::F32, {2, 3}, bytes_of(data))};
  expect_error([&] { (void)plan_write(tensors); }, ErrorCode::size_mismatch, {"\"m\"", "24", "20"});
  // A producer has no length of its own to check.
  const std::vector produced{TensorData::from_producer(
      "m", Dtype::F32, {2, 3},
      [](std::uint64_t, std::span<std::byte> out) { std::memset(out.data(), 0, out.size()); })};
  EXPECT_EQ(plan_write(produced).data_size, 24u);
}

TEST(WriterRejects, BadAlignment) {
  for (std::uint64_t alignment : {0, 1, 4, 12, 24, 4095}) {
    WriteOptions options;
    options.alignment = alignment;
    expect_error([&] { (void)plan_write({}, options); }, ErrorCode::invalid_argument,
                 {std::to_string(alignment)});
  }
}

TEST(WriterRejects, InvalidInputCreatesNoFile) {
  const std::filesystem::path path = test::unique_path("writer-rejected");
  const std::vector tensors{TensorData::from_bytes("f4", Dtype::F4, {1}, {})};
  EXPECT_THROW(write_file(path, tensors), Error);
  EXPECT_FALSE(std::filesystem::exists(path));
}

// Deterministic bytes of every dtype, round-tripped through the reader's parser.
TEST(Writer, RoundTripsEveryDtype) {
  std::vector<std::string> storage;
  std::vector<TensorData> tensors;
  for (Dtype dtype : all_dtypes()) {
    // 8 elements is a whole number of bytes for every sub-byte dtype.
    const std::vector<std::uint64_t> shape{2, 4};
    const std::uint64_t size = byte_size(dtype, shape).bytes;
    std::string bytes(size, '\0');
    for (std::uint64_t i = 0; i < size; ++i) {
      bytes[i] = static_cast<char>(static_cast<unsigned>(dtype) * 31 + i * 7);
    }
    storage.push_back(std::move(bytes));
  }
  for (Dtype dtype : all_dtypes()) {
    const std::string& bytes = storage[static_cast<std::size_t>(dtype)];
    tensors.push_back(TensorData::from_bytes("t_" + std::string(dtype_name(dtype)), dtype, {2, 4},
                                             bytes_of(bytes)));
  }
  WriteOptions options;
  options.metadata = Metadata{{"format", "pt"}, {"note", "round trip"}};
  const std::vector<std::byte> file = write_to_buffer(tensors, options);
  const Header header = parse_file_header(file, "round trip");

  ASSERT_EQ(header.tensors.size(), tensors.size());
  EXPECT_EQ(header.metadata, options.metadata);
  EXPECT_EQ(header.data_start % 8, 0u);
  const WritePlan plan = plan_write(tensors, options);
  EXPECT_EQ(header.data_start, plan.header.size());
  for (std::size_t k = 0; k < plan.order.size(); ++k) {
    const TensorData& in = tensors[plan.order[k]];
    const TensorInfo& out = header.tensors[k];
    EXPECT_EQ(out.name, in.name);
    EXPECT_EQ(out.dtype, in.dtype);
    EXPECT_EQ(out.shape, in.shape);
    EXPECT_EQ(out.data_begin, plan.begin[plan.order[k]]);
    EXPECT_EQ(out.byte_count(), in.bytes.size());
    EXPECT_EQ(
        to_string(std::span(file).subspan(header.data_start + out.data_begin, out.byte_count())),
        to_string(in.bytes))
        << in.name;
  }
}

// Escaped names, empty metadata, no tensors and a large alignment read back unchanged.
TEST(Writer, RoundTripsEdgeCases) {
  // Every control character but NUL, which FORMAT.md refuses.
  const std::string weird = "q\"b\\s\b\t\n\f\r\x1f\x10\x01\x7f/\xc3\xa9\xe6\x97\xa5"s;
  const auto one = "\x2a"sv;
  const std::vector<std::vector<TensorData>> cases{
      {},
      {TensorData::from_bytes(weird, Dtype::U8, {1}, bytes_of(one)),
       TensorData::from_bytes("", Dtype::U8, {0}, {}),
       TensorData::from_bytes("\xc3\xa9", Dtype::BOOL, {1}, bytes_of(one))},
  };
  for (const auto& tensors : cases) {
    for (const std::optional<Metadata>& metadata :
         {std::optional<Metadata>{}, std::optional<Metadata>{Metadata{}},
          std::optional<Metadata>{Metadata{{weird, weird}, {"", "x"}}}}) {
      for (std::uint64_t alignment : {8, 4096}) {
        WriteOptions options;
        options.metadata = metadata;
        options.alignment = alignment;
        const std::vector<std::byte> file = write_to_buffer(tensors, options);
        const Header header = parse_file_header(file, "edge case");
        EXPECT_EQ(header.metadata, metadata);
        EXPECT_EQ(header.data_start % alignment, 0u);
        ASSERT_EQ(header.tensors.size(), tensors.size());
        for (const TensorData& t : tensors) {
          const auto found =
              std::find_if(header.tensors.begin(), header.tensors.end(),
                           [&](const TensorInfo& info) { return info.name == t.name; });
          ASSERT_NE(found, header.tensors.end()) << t.name;
          EXPECT_EQ(found->dtype, t.dtype);
          EXPECT_EQ(found->shape, t.shape);
          EXPECT_EQ(to_string(std::span(file).subspan(header.data_start + found->data_begin,
                                                      found->byte_count())),
                    to_string(t.bytes));
        }
      }
    }
  }
}

// A producer that records the offsets it is asked for and fills a deterministic pattern.
struct PatternProducer {
  std::vector<std::pair<std::uint64_t, std::size_t>>* calls;
  void operator()(std::uint64_t offset, std::span<std::byte> out) const {
    calls->emplace_back(offset, out.size());
    for (std::size_t i = 0; i < out.size(); ++i) {
      const std::uint64_t at = offset + i;
      out[i] = static_cast<std::byte>((at * 2654435761u) >> 13);
    }
  }
};

TEST(Writer, ProducerStreamsLikeBorrowedMemory) {
  constexpr std::uint64_t size = std::uint64_t{64} << 20;
  std::vector<std::byte> memory(size);
  std::vector<std::pair<std::uint64_t, std::size_t>> ignored;
  PatternProducer{&ignored}(0, memory);

  std::vector<std::pair<std::uint64_t, std::size_t>> calls;
  const auto small = "\x01\x02"sv;
  const std::vector produced{
      TensorData::from_producer("big", Dtype::F32, {size / 4}, PatternProducer{&calls}),
      TensorData::from_bytes("small", Dtype::U8, {2}, bytes_of(small)),
  };
  const std::vector borrowed{
      TensorData::from_bytes("big", Dtype::F32, {size / 4}, memory),
      TensorData::from_bytes("small", Dtype::U8, {2}, bytes_of(small)),
  };
  test::ScratchFile from_producer("writer-producer");
  test::ScratchFile from_memory("writer-memory");
  write_file(from_producer.path(), produced);
  write_file(from_memory.path(), borrowed);

  const std::string a = read_whole_file(from_producer.path());
  const std::string b = read_whole_file(from_memory.path());
  EXPECT_EQ(a.size(), plan_write(borrowed).file_size());
  EXPECT_TRUE(a == b) << "producer output differs from borrowed output";

  // Chunks are consecutive, increasing, bounded and cover the tensor exactly.
  ASSERT_GT(calls.size(), 1u);
  std::uint64_t expected_offset = 0;
  for (const auto& [offset, length] : calls) {
    EXPECT_EQ(offset, expected_offset);
    EXPECT_GT(length, 0u);
    EXPECT_LE(length, std::size_t{8} << 20);
    expected_offset += length;
  }
  EXPECT_EQ(expected_offset, size);
}

TEST(Writer, SinkAndBufferShareTheStream) {
  const auto u = "\x08\x07\x06\x05\x04\x03\x02\x01"sv;
  std::vector<std::pair<std::uint64_t, std::size_t>> calls;
  const std::vector tensors{
      TensorData::from_bytes("u", Dtype::U64, {1}, bytes_of(u)),
      TensorData::from_producer("p", Dtype::I16, {1000}, PatternProducer{&calls}),
  };
  std::string streamed;
  std::size_t chunks = 0;
  write_to_sink(tensors, {}, [&](std::span<const std::byte> chunk) {
    streamed += to_string(chunk);
    ++chunks;
  });
  EXPECT_EQ(streamed, written(tensors));
  EXPECT_GE(chunks, 3u);  // header, borrowed bytes, produced bytes
}

TEST(Writer, ThrowingProducerLeavesTheTargetAlone) {
  const std::string old_content = "previous content";
  test::ScratchFile target("writer-throwing", bytes_of(old_content));
  const std::vector tensors{
      TensorData::from_producer("p", Dtype::U8, {std::uint64_t{32} << 20},
                                [](std::uint64_t offset, std::span<std::byte> out) {
                                  if (offset > 0) throw std::runtime_error("producer failed");
                                  std::memset(out.data(), 1, out.size());
                                })};
  EXPECT_THROW(write_file(target.path(), tensors), std::runtime_error);
  EXPECT_EQ(read_whole_file(target.path()), old_content);
  for (const auto& entry : std::filesystem::directory_iterator(target.path().parent_path())) {
    const std::string name = entry.path().filename().string();
    EXPECT_NE(name.rfind("." + target.path().filename().string() + ".tmp-", 0), 0u)
        << "temporary file left behind: " << name;
  }
}

}  // namespace
}  // namespace safetensors
