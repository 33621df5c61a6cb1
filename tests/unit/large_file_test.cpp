// A sparse file larger than RAM + swap: every way of opening it works and reads lazily.
// Labelled `sparse` in ctest, so it can be excluded where the scratch file system cannot
// hold sparse files; it also skips itself when the file would not be sparse.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "safetensors/file.hpp"
#include "safetensors/source.hpp"
#include "test_files.hpp"

namespace safetensors {
namespace {

// MemTotal + SwapTotal in bytes: the heuristic commit limit a single private writable
// mapping is checked against without MAP_NORESERVE.
std::uint64_t memory_plus_swap() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  std::uint64_t kib = 0;
  std::uint64_t total = 0;
  std::string unit;
  while (meminfo >> key >> kib) {
    if (key == "MemTotal:" || key == "SwapTotal:") total += kib * 1024;
    std::getline(meminfo, unit);
  }
  return total;
}

// One U8 tensor `huge` filling a file of 1.2 x (RAM + swap), all zeros, allocated lazily.
class HugeSparseFile {
 public:
  HugeSparseFile() : path_(test::unique_path("huge-sparse")) {
    const std::uint64_t limit = memory_plus_swap();
    std::string header = "{\"huge\":{\"dtype\":\"U8\",\"shape\":[@],\"data_offsets\":[0,@]}}";
    // A few digits of room, then the real numbers once the header length is known.
    data_size_ = limit / 5 * 6;
    const std::string digits = std::to_string(data_size_);
    for (std::size_t at; (at = header.find('@')) != std::string::npos;)
      header.replace(at, 1, digits);
    header.append((8 - (8 + header.size()) % 8) % 8, ' ');
    const std::vector<std::byte> prefix = test::file_bytes(header);
    test::write_file(path_, prefix);
    const std::uint64_t size = prefix.size() + data_size_;
    if (::truncate(path_.c_str(), static_cast<off_t>(size)) != 0) {
      reason_ = std::string("truncate: ") + std::strerror(errno);
      return;
    }
    struct stat st {};
    if (::stat(path_.c_str(), &st) != 0 ||
        static_cast<std::uint64_t>(st.st_blocks) * 512 > (1u << 20)) {
      reason_ = "the scratch file system does not keep the file sparse";
    }
  }
  ~HugeSparseFile() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  const std::filesystem::path& path() const noexcept { return path_; }
  std::uint64_t data_size() const noexcept { return data_size_; }
  const std::string& skip_reason() const noexcept { return reason_; }

 private:
  std::filesystem::path path_;
  std::uint64_t data_size_ = 0;
  std::string reason_;
};

bool all_zero(std::span<const std::byte> bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](std::byte b) { return b == std::byte{0}; });
}

TEST(LargerThanMemory, EveryBackendOpensItAndReadsTheEnd) {
  HugeSparseFile huge;
  if (!huge.skip_reason().empty()) GTEST_SKIP() << huge.skip_reason();
  const std::vector<std::pair<std::string, std::function<File()>>> openers = {
      {"mmap", [&] { return File::open(huge.path()); }},
      {"pread", [&] { return File::open(huge.path(), Backend::pread); }},
      // What the Python package opens with by default: it failed with ENOMEM here.
      {"writable mmap", [&] { return File::from_source(open_writable_mmap_source(huge.path())); }},
  };
  for (const auto& [name, open] : openers) {
    SCOPED_TRACE(name);
    const File file = open();
    const TensorInfo& info = file.info("huge");
    ASSERT_EQ(info.byte_count(), huge.data_size());
    std::vector<std::byte> tail(4096, std::byte{0x5A});
    file.source().read_at(file.header().data_start + info.data_end - tail.size(), tail);
    EXPECT_TRUE(all_zero(tail));
    if (file.zero_copy()) {
      EXPECT_TRUE(all_zero(file.view(info).data.last(4096)));
    }
  }
}

// Tensors handed to Python are writable; a write stays in this process, never in the file.
TEST(LargerThanMemory, WritableMappingLeavesTheFileAlone) {
  HugeSparseFile huge;
  if (!huge.skip_reason().empty()) GTEST_SKIP() << huge.skip_reason();
  const File file = File::from_source(open_writable_mmap_source(huge.path()));
  const std::span<const std::byte> data = file.view("huge").data;
  auto* last = const_cast<std::byte*>(data.data() + data.size() - 1);
  *last = std::byte{0x7F};
  EXPECT_EQ(*last, std::byte{0x7F});
  std::vector<std::byte> on_disk(1, std::byte{0x5A});
  File::open(huge.path(), Backend::pread).source().read_at(file.source().size() - 1, on_disk);
  EXPECT_EQ(on_disk[0], std::byte{0});
}

}  // namespace
}  // namespace safetensors
