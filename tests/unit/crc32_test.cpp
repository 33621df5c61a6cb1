// The fast CRC-32 against zlib's, which zip files are checked with: every length around the
// fold boundaries, every misalignment, continuation across splits, and a known check value.
#include "../../src/zip/crc32.hpp"

#include <gtest/gtest.h>
#include <zlib.h>

#include <random>
#include <string_view>
#include <vector>

namespace safetensors::detail::zip {
namespace {

std::vector<std::byte> random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::vector<std::byte> out(n);
  for (std::byte& b : out) b = static_cast<std::byte>(gen());
  return out;
}

std::uint32_t zlib(std::uint32_t crc, std::span<const std::byte> b) {
  return static_cast<std::uint32_t>(
      crc32_z(crc, reinterpret_cast<const Bytef*>(b.data()), b.size()));
}

TEST(Crc32, KnownCheckValue) {
  const std::string_view text = "123456789";
  EXPECT_EQ(crc32_update(0, std::as_bytes(std::span(text))), 0xCBF43926u);
  EXPECT_EQ(crc32_update(0, {}), 0u);
}

TEST(Crc32, EveryLengthAndAlignmentMatchesZlib) {
  const std::vector<std::byte> data = random_bytes(2048 + 16, 1);
  for (std::size_t offset = 0; offset < 16; ++offset) {
    for (std::size_t n = 0; n <= 2048; n += (n < 600 ? 1 : 7)) {
      const auto part = std::span(data).subspan(offset, n);
      ASSERT_EQ(crc32_update(0, part), zlib(0, part)) << "offset " << offset << " length " << n;
    }
  }
}

TEST(Crc32, ContinuesFromAnyStartValue) {
  const std::vector<std::byte> data = random_bytes(4096, 2);
  for (std::uint32_t start : {0u, 1u, 0xFFFFFFFFu, 0xDEADBEEFu}) {
    EXPECT_EQ(crc32_update(start, data), zlib(start, data)) << start;
  }
}

TEST(Crc32, SplitsGiveTheSameValueAsOnePass) {
  const std::vector<std::byte> data = random_bytes(100000, 3);
  const std::uint32_t whole = zlib(0, data);
  ASSERT_EQ(crc32_update(0, data), whole);
  std::mt19937 gen(4);
  for (int trial = 0; trial < 50; ++trial) {
    std::uint32_t crc = 0;
    for (std::size_t at = 0; at < data.size();) {
      const std::size_t n = std::min<std::size_t>(data.size() - at, gen() % 5000);
      crc = crc32_update(crc, std::span(data).subspan(at, n));
      at += n;
    }
    ASSERT_EQ(crc, whole) << "trial " << trial;
  }
}

TEST(Crc32, LargeBufferAndSpecialPatterns) {
  const std::vector<std::byte> data = random_bytes(std::size_t{8} << 20, 5);
  EXPECT_EQ(crc32_update(0, data), zlib(0, data));
  for (std::byte fill : {std::byte{0x00}, std::byte{0xFF}, std::byte{0x80}}) {
    const std::vector<std::byte> same(70000, fill);
    EXPECT_EQ(crc32_update(0, same), zlib(0, same));
  }
}

TEST(Crc32, ParallelPiecesCombineToTheSameValue) {
  for (std::size_t size : {std::size_t{1000}, (std::size_t{33} << 20) + 5, std::size_t{70} << 20}) {
    const std::vector<std::byte> data = random_bytes(size, 6);
    EXPECT_EQ(crc32_parallel(data), zlib(0, data)) << size;
  }
}

}  // namespace
}  // namespace safetensors::detail::zip
