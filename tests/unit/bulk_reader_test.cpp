// BulkReader, the loader's reads: through the Source's own descriptor (never a file found
// again by name), with O_DIRECT or a mapping of its own, and through the Source for memory.
#include "io/bulk_reader.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <new>
#include <vector>

#include "expect_error.hpp"
#include "safetensors/source.hpp"
#include "test_files.hpp"

namespace safetensors::detail {
namespace {

namespace fs = std::filesystem;
using test::ScratchFile;

struct AlignedBuffer {
  explicit AlignedBuffer(std::size_t n)
      : size(n), data(static_cast<std::byte*>(::operator new[](n, std::align_val_t{4096}))) {}
  ~AlignedBuffer() { ::operator delete[](data, std::align_val_t{4096}); }
  std::span<std::byte> span() { return {data, size}; }
  std::size_t size;
  std::byte* data;
};

using Opener = std::unique_ptr<Source> (*)(const fs::path&);

TEST(BulkReader, EveryWayReadsTheSameBytesFromEveryFileSource) {
  const std::vector<std::byte> bytes = test::counting_bytes(50000);
  ScratchFile file("bulk", bytes);
  for (Opener open : {Opener{open_pread_source}, Opener{open_mmap_source}}) {
    const std::unique_ptr<Source> source = open(file.path());
    ASSERT_GE(source->descriptor(), 0);
    const BulkReader reader(*source, true, true);
    ASSERT_NE(reader.mapping(), nullptr);
    EXPECT_NE(reader.mapping(), source->mapped().data());  // a mapping of its own
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), reader.mapping()));
    reader.prefetch(123, 4000);
    std::vector<std::byte> out(7000);
    reader.read(4321, out);
    EXPECT_TRUE(std::equal(out.begin(), out.end(), bytes.begin() + 4321));
    AlignedBuffer bounce(7000 + 2 * direct_alignment);
    const std::span<const std::byte> direct = reader.read_direct(4321, 7000, bounce.span());
    EXPECT_TRUE(
        std::equal(direct.begin(), direct.end(), bytes.begin() + 4321, bytes.begin() + 11321));
    // The last block of the file comes back short, which is fine up to the end.
    const std::span<const std::byte> tail = reader.read_direct(49990, 10, bounce.span());
    EXPECT_TRUE(std::equal(tail.begin(), tail.end(), bytes.end() - 10));
  }
}

TEST(BulkReader, ReadsTheOpenedFileNotWhateverHasItsNameNow) {
  const std::vector<std::byte> original = test::counting_bytes(10000);
  ScratchFile file("bulk-renamed", original);
  const std::unique_ptr<Source> source = open_mmap_source(file.path());
  fs::rename(file.path(), file.path().string() + ".old");
  test::write_file(file.path(), test::counting_bytes(10000, 7));  // another file under the name
  const BulkReader reader(*source, true, false);
  std::vector<std::byte> out(1000);
  reader.read(500, out);
  EXPECT_TRUE(std::equal(out.begin(), out.end(), original.begin() + 500));
  AlignedBuffer bounce(1000 + 2 * direct_alignment);
  const std::span<const std::byte> direct = reader.read_direct(500, 1000, bounce.span());
  EXPECT_TRUE(
      std::equal(direct.begin(), direct.end(), original.begin() + 500, original.begin() + 1500));
  fs::remove(file.path().string() + ".old");
}

TEST(BulkReader, MemorySourcesAreReadThroughTheSourceEvenWhenNamedLikeAFile) {
  ScratchFile file("bulk-decoy", test::counting_bytes(1000, 99));
  const std::vector<std::byte> bytes = test::counting_bytes(1000);
  const std::unique_ptr<Source> source = make_memory_source(bytes, file.path().string());
  EXPECT_EQ(source->descriptor(), -1);
  const BulkReader reader(*source, true, true);
  EXPECT_EQ(reader.mapping(), bytes.data());
  std::vector<std::byte> out(100);
  reader.read(10, out);
  EXPECT_TRUE(std::equal(out.begin(), out.end(), bytes.begin() + 10));
  AlignedBuffer bounce(100 + 2 * direct_alignment);
  const std::span<const std::byte> direct = reader.read_direct(10, 100, bounce.span());
  EXPECT_TRUE(std::equal(direct.begin(), direct.end(), bytes.begin() + 10, bytes.begin() + 110));
}

TEST(BulkReader, AFileThatShrankIsAShortRead) {
  ScratchFile file("bulk-shrunk", test::counting_bytes(20000));
  const std::unique_ptr<Source> source = open_pread_source(file.path());
  fs::resize_file(file.path(), 5000);
  const BulkReader reader(*source, true, false);
  std::vector<std::byte> out(1000);
  test::expect_error([&] { reader.read(8000, out); }, ErrorCode::io,
                     {file.path().string(), "unexpected end of file"});
  AlignedBuffer bounce(1000 + 2 * direct_alignment);
  test::expect_error([&] { (void)reader.read_direct(8000, 1000, bounce.span()); }, ErrorCode::io,
                     {file.path().string(), "unexpected end of file"});
}

}  // namespace
}  // namespace safetensors::detail
