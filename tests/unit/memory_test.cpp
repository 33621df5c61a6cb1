// The OS layer's memory helpers: file mappings, page advice and huge-page-aligned buffers.
#include "io/memory.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "expect_error.hpp"
#include "io/posix.hpp"
#include "test_files.hpp"

namespace safetensors::detail {
namespace {

using test::ScratchFile;

TEST(MapFile, EveryKindShowsTheFile) {
  const std::vector<std::byte> bytes = test::counting_bytes(10000);
  ScratchFile file("map", bytes);
  const FileDescriptor fd = open_regular_file(file.path().string());
  for (MapKind kind : {MapKind::read_only, MapKind::copy_on_write, MapKind::shared_read}) {
    const Mapping mapping = map_file(fd.get(), bytes.size(), kind, "f");
    ASSERT_EQ(mapping.bytes().size(), bytes.size());
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), mapping.bytes().begin()));
  }
}

TEST(MapFile, CopyOnWriteNeverReachesTheFile) {
  const std::vector<std::byte> bytes = test::counting_bytes(100);
  ScratchFile file("map-cow", bytes);
  const FileDescriptor fd = open_regular_file(file.path().string());
  const Mapping mapping = map_file(fd.get(), bytes.size(), MapKind::copy_on_write, "f");
  const_cast<std::byte*>(mapping.bytes().data())[0] = std::byte{0xff};
  EXPECT_EQ(read_regular_file(file.path().string(), 1000)[0], '\0');
}

TEST(MapFile, EmptyFileIsAnEmptySpanAndBadDescriptorsThrow) {
  EXPECT_TRUE(map_file(-1, 0, MapKind::read_only, "empty").bytes().empty());
  try {
    (void)map_file(-1, 4096, MapKind::read_only, "bad");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::io);
    EXPECT_EQ(e.os_error(), std::errc::bad_file_descriptor);
    EXPECT_NE(std::string(e.what()).find("bad: cannot map"), std::string::npos);
  }
}

TEST(Mapping, MovingHandsOverTheOneUnmap) {
  const std::vector<std::byte> bytes = test::counting_bytes(5000);
  ScratchFile file("map-move", bytes);
  const FileDescriptor fd = open_regular_file(file.path().string());
  Mapping first = map_file(fd.get(), bytes.size(), MapKind::read_only, "f");
  const std::byte* where = first.bytes().data();
  Mapping second = std::move(first);
  EXPECT_TRUE(first.bytes().empty());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(second.bytes().data(), where);
  second = map_file(fd.get(), 100, MapKind::read_only, "f");  // the old one is unmapped
  EXPECT_EQ(second.bytes().size(), 100u);
  EXPECT_EQ(second.bytes()[99], bytes[99]);
}

TEST(Advise, DontNeedKeepsTheBytesOfAFileMapping) {
  const std::vector<std::byte> bytes = test::counting_bytes(3 * 4096 + 100);
  ScratchFile file("advise", bytes);
  const FileDescriptor fd = open_regular_file(file.path().string());
  const Mapping mapping = map_file(fd.get(), bytes.size(), MapKind::read_only, "f");
  for (PageAdvice advice : {PageAdvice::sequential, PageAdvice::will_need, PageAdvice::dont_need}) {
    advise(mapping.bytes().subspan(10, 9000), advice);
    advise({}, advice);  // nothing to advise
  }
  EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), mapping.bytes().begin()));
}

TEST(Advise, DontNeedSparesThePagesAtTheEdges) {
  // Anonymous private memory is zeroed by MADV_DONTNEED: a visible witness of which pages
  // the advice reached.
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const std::size_t size = 8 * page;
  void* raw = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(raw, MAP_FAILED);
  auto* buffer = static_cast<std::byte*>(raw);
  std::memset(buffer, 0x5a, 4 * page);
  advise({buffer + 100, 3 * page}, PageAdvice::dont_need);
  EXPECT_EQ(buffer[100], std::byte{0x5a});            // first page shared with the edge
  EXPECT_EQ(buffer[page], std::byte{0});              // whole pages inside: dropped
  EXPECT_EQ(buffer[3 * page + 50], std::byte{0x5a});  // last, partial page kept
  ::munmap(raw, size);
}

// Pages of `bytes` (page aligned) in the page cache, as mincore(2) reports them.
std::size_t resident_pages(std::span<const std::byte> bytes) {
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> map((bytes.size() + page - 1) / page);
  EXPECT_EQ(::mincore(const_cast<std::byte*>(bytes.data()), bytes.size(), map.data()), 0);
  std::size_t resident = 0;
  for (unsigned char m : map) resident += m & 1;
  return resident;
}

TEST(Populate, EveryPageIsResidentAfterwardsWithAnyThreadCount) {
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const std::vector<std::byte> bytes = test::counting_bytes(70 * 1024 * 1024 + 123);
  const std::size_t pages = (bytes.size() + page - 1) / page;
  ScratchFile file("populate", bytes);
  const FileDescriptor fd = open_regular_file(file.path().string());
  for (unsigned threads : {0u, 1u, 3u}) {
    const Mapping mapping = map_file(fd.get(), bytes.size(), MapKind::copy_on_write, "f");
    // Evict what the write left cached (clean pages only), so populate has pages to read.
    ::fdatasync(fd.get());
    ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
    const std::size_t before = resident_pages(mapping.bytes());
    if (before == pages) GTEST_SKIP() << "the page cache keeps this file (tmpfs?): nothing to read";
    populate(mapping.bytes(), threads, "f");
    EXPECT_EQ(resident_pages(mapping.bytes()), pages)
        << threads << " threads, " << before << " pages resident before";
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), mapping.bytes().begin()));
  }
}

TEST(Populate, ProgressRunsOnTheCallingThreadAndItsExceptionStopsTheWorkers) {
  // 10 steps of 32 MiB: a file with holes, so nothing is written to disk.
  const std::uint64_t size = std::uint64_t{320} << 20;
  ScratchFile file("populate-progress", {});
  std::filesystem::resize_file(file.path(), size);
  const FileDescriptor fd = open_regular_file(file.path().string());
  const Mapping mapping = map_file(fd.get(), size, MapKind::read_only, "f");
  const std::span<const std::byte> ranges[] = {mapping.bytes()};
  for (unsigned threads : {1u, 3u}) {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> calls;
    const std::thread::id caller = std::this_thread::get_id();
    populate(ranges, threads, "f", [&](std::uint64_t done, std::uint64_t total) {
      EXPECT_EQ(std::this_thread::get_id(), caller);
      calls.emplace_back(done, total);
    });
    ASSERT_FALSE(calls.empty()) << threads << " threads";
    for (std::size_t i = 0; i < calls.size(); ++i) {
      EXPECT_EQ(calls[i].second, size);
      if (i > 0) {
        EXPECT_LT(calls[i - 1].first, calls[i].first);
      }
    }
    if (threads == 1) {
      EXPECT_EQ(calls.size(), 10u);  // one report per step
      EXPECT_EQ(calls.back().first, size);
    }

    // The first report throws: the workers stop after their current step (one alone, at its
    // first), and the exception is the caller's.
    std::atomic<int> reports{0};
    std::uint64_t stopped_at = 0;
    EXPECT_THROW(populate(ranges, threads, "f",
                          [&](std::uint64_t done, std::uint64_t) {
                            ++reports;
                            stopped_at = done;
                            throw std::runtime_error("stop");
                          }),
                 std::runtime_error);
    EXPECT_EQ(reports.load(), 1);
    if (threads == 1) {
      EXPECT_EQ(stopped_at, std::uint64_t{32} << 20);
    }
  }
}

TEST(Populate, AFileThatShrankIsAnIoErrorNotACrash) {
  const std::vector<std::byte> bytes = test::counting_bytes(1 << 20);
  ScratchFile file("populate-shrunk", bytes);
  const FileDescriptor fd = open_regular_file(file.path().string());
  const Mapping mapping = map_file(fd.get(), bytes.size(), MapKind::read_only, "shrunk.bin");
  std::filesystem::resize_file(file.path(), 4096);
  test::expect_error([&] { populate(mapping.bytes(), 2, "shrunk.bin"); }, ErrorCode::io,
                     {"shrunk.bin", "did the file shrink?"});
}

TEST(PrefaultForWrite, PagesBecomeResidentAndKeepTheirBytes) {
  const std::size_t size = (std::size_t{20} << 20) + 5000;
  void* raw = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(raw, MAP_FAILED);
  const std::span<std::byte> bytes(static_cast<std::byte*>(raw), size);
  bytes[size / 2] = std::byte{7};                              // one page already holds data
  ASSERT_LT(resident_pages(bytes), (size + 4095) / 4096 / 2);  // a huge page at most
  const std::atomic<bool> stop{false};
  if (!prefault_for_write(bytes, stop)) GTEST_SKIP() << "MADV_POPULATE_WRITE needs Linux 5.14";
  EXPECT_EQ(resident_pages(bytes), (size + 4095) / 4096);
  EXPECT_EQ(bytes[size / 2], std::byte{7});
  EXPECT_EQ(bytes[0], std::byte{0});
  ::munmap(raw, size);
}

TEST(PrefaultForWrite, StopsWhenAsked) {
  const std::size_t size = std::size_t{64} << 20;
  void* raw = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(raw, MAP_FAILED);
  const std::span<std::byte> bytes(static_cast<std::byte*>(raw), size);
  const std::atomic<bool> stop{true};
  (void)prefault_for_write(bytes, stop);
  EXPECT_EQ(resident_pages(bytes), 0u);
  ::munmap(raw, size);
}

}  // namespace
}  // namespace safetensors::detail
