// Little-endian loads and stores of each width, from each byte type buffers come in.
#include "encoding/little_endian.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace safetensors::detail {
namespace {

constexpr std::array<std::byte, 8> bytes{std::byte{0x01}, std::byte{0x02}, std::byte{0x03},
                                         std::byte{0x04}, std::byte{0x05}, std::byte{0x06},
                                         std::byte{0x07}, std::byte{0xF8}};
constexpr std::span<const std::byte> all(bytes);

TEST(LittleEndian, LoadsEachWidth) {
  EXPECT_EQ(load_le<std::uint8_t>(all), 0x01u);
  EXPECT_EQ(load_le<std::uint16_t>(all), 0x0201u);
  EXPECT_EQ(load_le<std::uint32_t>(all), 0x04030201u);
  EXPECT_EQ(load_le<std::uint64_t>(all), 0xF807060504030201u);
  EXPECT_EQ(load_le<std::uint16_t>(all.subspan(6)), 0xF807u);
  static_assert(load_le<std::uint32_t>(all.subspan(4)) == 0xF8070605u);
}

TEST(LittleEndian, LoadsAnyWidthUpToEight) {
  EXPECT_EQ(load_le_bytes(all.first(0)), 0u);
  EXPECT_EQ(load_le_bytes(all.first(3)), 0x030201u);
  EXPECT_EQ(load_le_bytes(all.subspan(5, 3)), 0xF80706u);
  const std::string text = "\x34\x12\xff";
  EXPECT_EQ(load_le_bytes(std::span<const char>(text)), 0xff1234u);  // char is not sign-extended
  const unsigned char raw[] = {0xAA, 0xBB};
  EXPECT_EQ(load_le_bytes(std::span<const unsigned char>(raw)), 0xBBAAu);
}

TEST(LittleEndian, StoreIsTheInverseOfLoad) {
  std::string header(8, '\0');
  store_le(0x0102030405060708u, std::span<char>(header));
  EXPECT_EQ(header, "\x08\x07\x06\x05\x04\x03\x02\x01");
  EXPECT_EQ(load_le<std::uint64_t>(std::span<const char>(header)), 0x0102030405060708u);
  std::array<std::byte, 2> two{};
  store_le(0xABCDEFu, std::span<std::byte>(two));  // bytes past the buffer are dropped
  EXPECT_EQ(load_le<std::uint16_t>(std::span<const std::byte>(two)), 0xCDEFu);
}

}  // namespace
}  // namespace safetensors::detail
