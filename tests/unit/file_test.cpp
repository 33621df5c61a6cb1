#include "safetensors/file.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "safetensors/error.hpp"
#include "test_files.hpp"

namespace safetensors {
namespace {

using test::ScratchFile;

std::vector<std::byte> numbered(std::size_t n, unsigned seed) {
  std::vector<std::byte> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>((i * 13 + seed) & 0xff);
  return out;
}

std::span<const std::byte> part(const std::vector<std::byte>& v, std::size_t begin,
                                std::size_t end) {
  return std::span(v).subspan(begin, end - begin);
}

// Just the 8-byte length prefix, claiming a header of `n` bytes.
std::vector<std::byte> length_only(std::uint64_t n) {
  auto bytes = test::file_bytes(std::string(8, ' '));
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<std::byte>((n >> (8 * i)) & 0xff);
  bytes.resize(8);
  return bytes;
}

bool same(std::span<const std::byte> a, std::span<const std::byte> b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end());
}

// Three tensors whose name order differs from their data order, two empty tensors sharing
// an offset, and metadata.
const std::string sample_header =
    R"({"__metadata__":{"format":"pt","note":"x"},)"
    R"("zeta":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
    R"("alpha":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]},)"
    R"("empty_b":{"dtype":"I64","shape":[0,5],"data_offsets":[32,32]},)"
    R"("empty_a":{"dtype":"U8","shape":[0],"data_offsets":[32,32]},)"
    R"("Mid":{"dtype":"U8","shape":[2,2],"data_offsets":[32,36]}})";
const std::vector<std::byte> sample_data = numbered(36, 5);

struct SampleFile {
  std::vector<std::byte> bytes = test::file_bytes(sample_header, sample_data);
  ScratchFile scratch{"file", bytes};
};

class BackendTest : public ::testing::TestWithParam<Backend> {};

TEST_P(BackendTest, OpensAndLooksUp) {
  SampleFile f;
  const File file = File::open(f.scratch.path(), GetParam());
  EXPECT_EQ(file.name(), f.scratch.path().string());
  EXPECT_EQ(file.size(), 5u);
  EXPECT_EQ(file.zero_copy(), GetParam() == Backend::mmap);
  EXPECT_EQ(file.header().data_start, 8 + sample_header.size());
  EXPECT_EQ(file.source().size(), f.bytes.size());

  std::vector<std::string> data_order;
  for (const auto& t : file.tensors()) data_order.push_back(t.name);
  ASSERT_EQ(data_order.size(), 5u);
  EXPECT_EQ(data_order[0], "zeta");
  EXPECT_EQ(data_order[1], "alpha");
  EXPECT_EQ(data_order[4], "Mid");

  std::vector<std::string> name_order;
  for (const TensorInfo* t : file.tensors_by_name()) name_order.push_back(t->name);
  EXPECT_EQ(name_order, (std::vector<std::string>{"Mid", "alpha", "empty_a", "empty_b", "zeta"}));

  for (const auto& t : file.tensors()) {
    EXPECT_EQ(file.find(t.name), &t);
    EXPECT_EQ(&file.info(t.name), &t);
  }
  EXPECT_EQ(file.find("missing"), nullptr);
  EXPECT_EQ(file.find(""), nullptr);
  EXPECT_EQ(file.find("zz"), nullptr);
  EXPECT_EQ(file.find("Alpha"), nullptr);
  try {
    file.info("missing");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::tensor_not_found);
    EXPECT_NE(std::string(e.what()).find(file.name()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no tensor named `missing`"), std::string::npos);
  }

  const TensorInfo& zeta = file.info("zeta");
  EXPECT_EQ(zeta.dtype, Dtype::F32);
  EXPECT_EQ(zeta.shape, (std::vector<std::uint64_t>{2, 3}));

  ASSERT_TRUE(file.metadata().has_value());
  EXPECT_EQ(file.metadata()->at("format"), "pt");
  EXPECT_EQ(file.metadata()->size(), 2u);
}

TEST_P(BackendTest, ReadsTensorBytes) {
  SampleFile f;
  const File file = File::open(f.scratch.path(), GetParam());
  for (const auto& t : file.tensors()) {
    SCOPED_TRACE(t.name);
    const auto expected = part(sample_data, t.data_begin, t.data_end);
    EXPECT_TRUE(same(file.read(t.name), expected));
    std::vector<std::byte> out(t.byte_count());
    file.read(t, out);
    EXPECT_TRUE(same(out, expected));
    if (GetParam() == Backend::mmap) {
      const TensorView v = file.view(t.name);
      EXPECT_EQ(v.info, &t);
      EXPECT_EQ(v.name(), t.name);
      EXPECT_EQ(v.dtype(), t.dtype);
      EXPECT_TRUE(same(v.data, expected));
      EXPECT_EQ(file.view(t).data.data(), v.data.data());
    }
  }
}

TEST_P(BackendTest, ReadRejectsWrongSize) {
  SampleFile f;
  const File file = File::open(f.scratch.path(), GetParam());
  std::vector<std::byte> out(23);
  try {
    file.read("zeta", out);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    const std::string what = e.what();
    for (const char* p : {"`zeta`", "24", "23"}) {
      EXPECT_NE(what.find(p), std::string::npos) << what;
    }
  }
  std::vector<std::byte> bigger(25);
  EXPECT_THROW(file.read(file.info("zeta"), bigger), Error);
  EXPECT_THROW(file.read("nope", bigger), Error);
}

TEST_P(BackendTest, InvalidFilesNameTheFile) {
  const auto valid_json = R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})";
  const std::vector<std::pair<std::vector<std::byte>, ErrorCode>> cases = {
      {{std::byte{1}, std::byte{0}, std::byte{0}}, ErrorCode::header_too_small},
      {{}, ErrorCode::header_too_small},
      {length_only(100'000'001), ErrorCode::header_too_large},
      {length_only(100), ErrorCode::invalid_header_length},
      {test::file_bytes("{not json"), ErrorCode::invalid_header},
      {test::file_bytes(valid_json, numbered(3, 0)), ErrorCode::buffer_size_mismatch},
      {test::file_bytes(valid_json, numbered(1, 0)), ErrorCode::buffer_size_mismatch},
      {test::file_bytes(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})", numbered(3, 0)),
       ErrorCode::invalid_offsets},
  };
  for (const auto& [bytes, code] : cases) {
    ScratchFile bad("invalid", bytes);
    try {
      (void)File::open(bad.path(), GetParam());
      ADD_FAILURE() << "accepted a file expected to fail with " << error_code_name(code);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << e.what();
      EXPECT_NE(std::string(e.what()).find(bad.path().string()), std::string::npos) << e.what();
    }
  }
  try {
    (void)File::open(test::unique_path("absent"), GetParam());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::io);
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos);
  }
}

// File::validate reads the header where open does (with the parser's padding), and keeps
// nothing: it must count the tensors open finds and refuse what open refuses, in the same words.
TEST(File, ValidateAgreesWithOpen) {
  SampleFile sample;
  EXPECT_EQ(File::validate(sample.scratch.path()), 5u);
  // Escaped names, listed out of data order: the names that open keeps are unescaped.
  const std::string escaped = R"({"b\u00e9":{"dtype":"U8","shape":[2],"data_offsets":[2,4]},)"
                              R"("\u0061":{"dtype":"U8","shape":[1,2],"data_offsets":[0,2]}})";
  ScratchFile names("escaped", test::file_bytes(escaped, numbered(4, 1)));
  EXPECT_EQ(File::validate(names.path()), 2u);
  const File opened = File::open(names.path());
  ASSERT_EQ(opened.size(), 2u);
  EXPECT_EQ(opened.tensors()[0].name, "a");
  EXPECT_EQ(opened.tensors()[0].shape, (std::vector<std::uint64_t>{1, 2}));
  EXPECT_EQ(opened.tensors()[1].name, "b\xC3\xA9");

  const std::vector<std::string> refused = {
      R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"\u0061":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
      R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})",
      R"({"a":{"dtype":"U8","shape":[3],"data_offsets":[0,4]}})",
      R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
      R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)",
  };
  for (const std::string& json : refused) {
    ScratchFile bad("refused", test::file_bytes(json, numbered(4, 0)));
    std::string from_open = "accepted";
    std::string from_validate = "accepted";
    try {
      (void)File::open(bad.path());
    } catch (const Error& e) {
      from_open = std::string(error_code_name(e.code())) + ": " + e.what();
    }
    try {
      (void)File::validate(bad.path());
    } catch (const Error& e) {
      from_validate = std::string(error_code_name(e.code())) + ": " + e.what();
    }
    EXPECT_NE(from_open, "accepted") << json;
    EXPECT_EQ(from_validate, from_open) << json;
  }
  try {
    (void)File::validate(test::unique_path("absent"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::io);
  }
}

// A header of 4 MiB or more is read while a second thread faults in its memory: the result is
// the same, and a read that fails ends the open with the source's error.
TEST(File, LargeHeaderIsReadWhole) {
  std::string json = "{";
  constexpr std::size_t count = 60000;  // about 4.6 MB of header
  for (std::size_t i = 0; i < count; ++i) {
    json += (i ? ",\"" : "\"") + std::string("model.layers.") + std::to_string(i) +
            ".self_attn.q_proj.weight\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[" +
            std::to_string(i) + "," + std::to_string(i + 1) + "]}";
  }
  json += "}";
  ASSERT_GE(json.size(), std::size_t{4} << 20);
  const std::vector<std::byte> bytes = test::file_bytes(json, numbered(count, 2));
  ScratchFile big("big-header", bytes);
  EXPECT_EQ(File::validate(big.path()), count);
  const File file = File::open(big.path());
  ASSERT_EQ(file.size(), count);
  EXPECT_EQ(file.tensors().back().name, "model.layers.59999.self_attn.q_proj.weight");
  EXPECT_EQ(file.tensors().back().data_begin, count - 1);

  // The same bytes from a source whose reads of the header's later part fail.
  class FailingLate final : public Source {
   public:
    explicit FailingLate(const std::vector<std::byte>& bytes) : bytes_(bytes) {}
    std::uint64_t size() const noexcept override { return bytes_.size(); }
    void read_at(std::uint64_t offset, std::span<std::byte> out) const override {
      if (offset + out.size() > (std::uint64_t{1} << 20)) {
        throw Error(ErrorCode::io, name() + ": the disk is gone");
      }
      std::memcpy(out.data(), bytes_.data() + offset, out.size());
    }
    const std::string& name() const noexcept override { return name_; }

   private:
    const std::vector<std::byte>& bytes_;
    std::string name_ = "failing";
  };
  try {
    (void)File::from_source(std::make_shared<FailingLate>(bytes));
    FAIL() << "a failed read was not reported";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::io);
    EXPECT_NE(std::string(e.what()).find("the disk is gone"), std::string::npos) << e.what();
  }
}

// 16 threads share one File (and copies of it) and compare against the expected bytes.
TEST_P(BackendTest, ConcurrentReadsAndSlices) {
  constexpr std::uint64_t rows = 64, cols = 1000;
  std::vector<std::int32_t> values(rows * cols);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<std::int32_t>(i * 3 + 1);
  const std::string header = R"({"m":{"dtype":"I32","shape":[64,1000],"data_offsets":[0,)" +
                             std::to_string(values.size() * 4) + "]}}";
  ScratchFile f("threads", test::file_bytes(header, std::as_bytes(std::span(values))));
  const File file = File::open(f.path(), GetParam());

  std::vector<int> failures(16, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t, copy = file] {
      for (std::uint64_t i = 0; i < 50; ++i) {
        const auto r = static_cast<std::int64_t>((i * 7 + static_cast<std::uint64_t>(t)) % rows);
        const SliceArg row_args[] = {SliceArg::at(r), SliceArg::range(t, std::nullopt, 7)};
        const SlicedTensor s = copy.slice("m", row_args);
        std::vector<std::int32_t> got(s.bytes().size() / 4);
        std::memcpy(got.data(), s.bytes().data(), s.bytes().size());
        for (std::size_t k = 0; k < got.size(); ++k) {
          if (got[k] !=
              values[static_cast<std::size_t>(r) * cols + static_cast<std::size_t>(t) + 7 * k]) {
            ++failures[t];
          }
        }
        if (i % 10 == 0) {
          const auto whole = copy.read("m");
          if (!same(whole, std::as_bytes(std::span(values)))) ++failures[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 16; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
}

INSTANTIATE_TEST_SUITE_P(Backends, BackendTest, ::testing::Values(Backend::mmap, Backend::pread),
                         [](const auto& info) {
                           return std::string(info.param == Backend::mmap ? "mmap" : "pread");
                         });

TEST(File, CopiesShareState) {
  SampleFile f;
  const File file = File::open(f.scratch.path());
  const File copy = file;  // NOLINT(performance-unnecessary-copy-initialization)
  EXPECT_EQ(&copy.header(), &file.header());
  EXPECT_EQ(&copy.source(), &file.source());
}

TEST(File, PreadHasNoViews) {
  SampleFile f;
  const File file = File::open(f.scratch.path(), Backend::pread);
  try {
    file.view("zeta");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    const std::string what = e.what();
    EXPECT_NE(what.find("pread"), std::string::npos) << what;
    EXPECT_NE(what.find("read()"), std::string::npos) << what;
    EXPECT_NE(what.find("zeta"), std::string::npos) << what;
  }
}

TEST(File, FromMemorySource) {
  const auto bytes = test::file_bytes(sample_header, sample_data);
  const File file = File::from_source(make_memory_source(bytes, "in-memory"));
  EXPECT_EQ(file.name(), "in-memory");
  EXPECT_TRUE(file.zero_copy());
  const TensorView v = file.view("alpha");
  EXPECT_EQ(v.data.data(), bytes.data() + 8 + sample_header.size() + 24);
  EXPECT_THROW((void)File::from_source(nullptr), Error);
}

TEST(File, OpenReadsOnlyTheHeader) {
  const auto bytes = test::file_bytes(sample_header, sample_data);
  auto recorder = std::make_shared<test::RecordingSource>(make_memory_source(bytes, "recorded"));
  const File file = File::from_source(recorder);
  EXPECT_FALSE(file.zero_copy());  // the recorder hides the mapping
  const auto reads = recorder->reads();
  ASSERT_FALSE(reads.empty());
  for (const auto& [offset, length] : reads) {
    EXPECT_LE(offset + length, 8 + sample_header.size()) << offset << "+" << length;
  }
  EXPECT_EQ(recorder->bytes_read(), 8 + sample_header.size());
  recorder->clear();
  EXPECT_TRUE(same(file.read("alpha"), part(sample_data, 24, 32)));
  EXPECT_EQ(
      recorder->reads(),
      (std::vector<std::pair<std::uint64_t, std::uint64_t>>{{8 + sample_header.size() + 24, 8}}));
}

// A sparse file past 4 GiB: a 4 GiB tensor nobody reads, then a small one after it.
TEST(File, LargeSparseFile) {
  constexpr std::uint64_t big = std::uint64_t{1} << 32;
  const std::string header = R"({"big":{"dtype":"U8","shape":[)" + std::to_string(big) +
                             R"(],"data_offsets":[0,)" + std::to_string(big) +
                             R"(]},"small":{"dtype":"I64","shape":[3],"data_offsets":[)" +
                             std::to_string(big) + "," + std::to_string(big + 24) + "]}}";
  const std::vector<std::int64_t> small{-1, 1234567890123, 42};
  const auto small_bytes = std::as_bytes(std::span(small));
  ScratchFile f("sparse", test::file_bytes(header));
  const std::uint64_t data_start = 8 + header.size();
  {
    const int fd = ::open(f.path().c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(data_start + big + 24)), 0);
    ASSERT_EQ(::pwrite(fd, small_bytes.data(), 24, static_cast<off_t>(data_start + big)), 24);
    ::close(fd);
  }
  for (Backend backend : {Backend::mmap, Backend::pread}) {
    auto inner =
        backend == Backend::mmap ? open_mmap_source(f.path()) : open_pread_source(f.path());
    auto recorder = std::make_shared<test::RecordingSource>(std::move(inner));
    const File recorded = File::from_source(recorder);
    EXPECT_LE(recorder->bytes_read(), data_start);

    const File file = File::open(f.path(), backend);
    EXPECT_EQ(file.info("big").byte_count(), big);
    EXPECT_TRUE(same(file.read("small"), small_bytes));
    const SliceArg last[] = {SliceArg::range(-2, std::nullopt)};
    const SlicedTensor tail = file.slice("small", last);
    EXPECT_TRUE(same(tail.bytes(), small_bytes.subspan(8)));
    const SliceArg big_tail[] = {SliceArg::range(-4, std::nullopt)};
    const SlicedTensor zeros = file.slice("big", big_tail);
    EXPECT_TRUE(same(zeros.bytes(), std::vector<std::byte>(4)));
    if (backend == Backend::mmap) {
      EXPECT_TRUE(same(file.view("small").data, small_bytes));
    }
  }
}

}  // namespace
}  // namespace safetensors
