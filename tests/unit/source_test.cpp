#include "safetensors/source.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "expect_error.hpp"
#include "safetensors/error.hpp"
#include "test_files.hpp"

namespace safetensors {
namespace {

using test::ScratchFile;

std::vector<std::byte> pattern(std::size_t n) {
  std::vector<std::byte> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>((i * 7 + 3) & 0xff);
  return out;
}

using Opener = std::function<std::unique_ptr<Source>(const std::filesystem::path&)>;

struct SourceKind {
  const char* name;
  Opener open;
  bool mapped;
};

class FileSourceTest : public ::testing::TestWithParam<SourceKind> {};

TEST_P(FileSourceTest, ReadsAnyRange) {
  const auto bytes = pattern(10000);
  ScratchFile file("source", bytes);
  const auto source = GetParam().open(file.path());
  EXPECT_EQ(source->size(), bytes.size());
  EXPECT_EQ(source->name(), file.path().string());
  EXPECT_EQ(!source->mapped().empty(), GetParam().mapped);
  for (auto [offset, length] : {std::pair<std::size_t, std::size_t>{0, 10000},
                                {0, 0},
                                {1, 1},
                                {4095, 3},
                                {9999, 1},
                                {10000, 0},
                                {1234, 5678}}) {
    std::vector<std::byte> out(length);
    source->read_at(offset, out);
    EXPECT_TRUE(std::equal(out.begin(), out.end(), bytes.begin() + offset))
        << offset << "+" << length;
  }
  if (GetParam().mapped) {
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), source->mapped().begin()));
  }
}

TEST_P(FileSourceTest, RejectsReadsPastTheEnd) {
  ScratchFile file("source", pattern(100));
  const auto source = GetParam().open(file.path());
  std::vector<std::byte> out(10);
  for (std::uint64_t offset :
       {std::uint64_t{91}, std::uint64_t{100}, std::uint64_t{101}, ~std::uint64_t{0} - 5}) {
    try {
      source->read_at(offset, out);
      FAIL() << "read at " << offset << " succeeded";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find(file.path().string()), std::string::npos) << e.what();
    }
  }
}

TEST_P(FileSourceTest, MissingFileNamesPathAndReason) {
  const auto path = test::unique_path("missing");
  try {
    GetParam().open(path);
    FAIL() << "opened a missing file";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::io);
    const std::string what = e.what();
    EXPECT_NE(what.find(path.string()), std::string::npos) << what;
    EXPECT_NE(what.find("No such file or directory"), std::string::npos) << what;
  }
}

// A FIFO without a writer used to block open(2) forever; the alarm turns a hang into a
// failure instead of a stuck test run.
TEST_P(FileSourceTest, RefusesWhatIsNotARegularFileWithoutBlocking) {
  const auto fifo = test::unique_path("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  ::alarm(30);
  struct Special {
    std::filesystem::path path;
    std::string_view type;
  };
  for (const Special& special :
       {Special{fifo, "is a FIFO"}, Special{"/dev/null", "character device"},
        Special{test::scratch_dir(), "is a directory"}}) {
    test::expect_error([&] { GetParam().open(special.path); }, ErrorCode::not_regular_file,
                       {special.path.string(), special.type, "not a regular file"});
  }
  ::alarm(0);
  std::filesystem::remove(fifo);
}

TEST_P(FileSourceTest, EmptyFile) {
  ScratchFile file("empty");
  const auto source = GetParam().open(file.path());
  EXPECT_EQ(source->size(), 0u);
  EXPECT_TRUE(source->mapped().empty());
  std::vector<std::byte> none;
  source->read_at(0, none);
  std::vector<std::byte> one(1);
  EXPECT_THROW(source->read_at(0, one), Error);
}

TEST_P(FileSourceTest, ConcurrentReads) {
  const auto bytes = pattern(1 << 16);
  ScratchFile file("concurrent", bytes);
  const auto source = GetParam().open(file.path());
  std::vector<std::thread> threads;
  std::vector<int> failures(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::byte> out(1000);
      for (std::size_t i = 0; i < 200; ++i) {
        const std::size_t offset = (i * 331 + static_cast<std::size_t>(t) * 97) % 64000;
        source->read_at(offset, out);
        if (!std::equal(out.begin(), out.end(), bytes.begin() + offset)) ++failures[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int f : failures) EXPECT_EQ(f, 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, FileSourceTest,
                         ::testing::Values(SourceKind{"mmap", open_mmap_source, true},
                                           SourceKind{"writable_mmap", open_writable_mmap_source,
                                                      true},
                                           SourceKind{"pread", open_pread_source, false}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(MemorySource, BorrowsTheBytes) {
  const auto bytes = pattern(50);
  const auto source = make_memory_source(bytes, "buffer");
  EXPECT_EQ(source->size(), 50u);
  EXPECT_EQ(source->name(), "buffer");
  EXPECT_EQ(source->mapped().data(), bytes.data());
  std::vector<std::byte> out(20);
  source->read_at(30, out);
  EXPECT_TRUE(std::equal(out.begin(), out.end(), bytes.begin() + 30));
  try {
    source->read_at(31, out);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("buffer"), std::string::npos);
  }
}

TEST(MemorySource, Empty) {
  const auto source = make_memory_source({}, "nothing");
  EXPECT_EQ(source->size(), 0u);
  std::vector<std::byte> one(1);
  EXPECT_THROW(source->read_at(0, one), Error);
}

}  // namespace
}  // namespace safetensors
