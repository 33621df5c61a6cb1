#include "convert/detect.hpp"

#include <algorithm>
#include <array>

#include "npy/npy.hpp"
#include "pickle/opcodes.hpp"
#include "zip/archive.hpp"

namespace safetensors::detail {
namespace {

// The highest pickle protocol there is (Python 3.8+).
constexpr std::uint8_t max_pickle_protocol = 5;

// PROTO with a known protocol, or an opcode a protocol 0-1 pickle may begin with.
bool looks_like_pickle(std::span<const std::byte> head) noexcept {
  if (head.empty()) return false;
  const auto first = std::to_integer<std::uint8_t>(head[0]);
  if (first == pickle::op::PROTO) {
    return head.size() >= 2 && std::to_integer<std::uint8_t>(head[1]) <= max_pickle_protocol;
  }
  return pickle::op::can_start_pickle(first);
}

}  // namespace

InputFormat detect_format(std::span<const std::byte> head) noexcept {
  if (zip::looks_like_zip(head)) return InputFormat::zip;
  if (npy::looks_like_npy(head)) return InputFormat::npy;
  if (looks_like_pickle(head)) return InputFormat::pickle;
  return InputFormat::unknown;
}

InputFormat detect_format(const Source& source) {
  std::array<std::byte, format_prefix_size> head{};
  const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(head.size(), source.size()));
  source.read_at(0, std::span(head).first(n));
  return detect_format(std::span<const std::byte>(head).first(n));
}

}  // namespace safetensors::detail
