// Structured fuzz inputs: a fuzzer that builds values (shapes, names, slice arguments) from
// its input reads the bytes front to back, and the input may end anywhere.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace fuzz {

/// Reads the input front to back; past its end every byte is 0, so any input describes a
/// complete value and short inputs the simplest ones.
class Reader {
 public:
  Reader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}

  std::uint8_t byte() { return at_ < size_ ? data_[at_++] : 0; }

  /// A length byte (taken modulo `max_length + 1`), then that many bytes of any value.
  std::string text(std::size_t max_length = 11) {
    std::string out(byte() % (max_length + 1), '\0');
    for (char& c : out) c = static_cast<char>(byte());
    return out;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t at_ = 0;
};

}  // namespace fuzz
