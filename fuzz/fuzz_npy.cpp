// libFuzzer target for the .npy header parser and the C-order conversion: any input is parsed
// as a whole .npy file and from a short prefix; an accepted header must describe exactly the
// bytes after it, and converting them must work. Only safetensors::Error may escape.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "../src/npy/npy.hpp"
#include "require.hpp"
#include "safetensors/error.hpp"

namespace {

using fuzz::require;

constexpr std::uint64_t max_convert = std::uint64_t{1} << 20;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace npy = safetensors::detail::npy;
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    // A prefix shorter than the header must be refused, never read past.
    (void)npy::parse_array_header(bytes.first(size / 2), size, "fuzz.npy");
  } catch (const safetensors::Error&) {
  }
  npy::ArrayHeader h;
  try {
    h = npy::parse_array_header(bytes, size, "fuzz.npy");
  } catch (const safetensors::Error&) {
    return 0;
  }
  require(h.data_offset <= size && size - h.data_offset == h.data_size,
          "header does not describe the rest of the input");
  if (h.data_size > max_convert) return 0;
  std::vector<std::byte> out(h.data_size);
  npy::to_c_order_little_endian(h, bytes.subspan(h.data_offset), out);
  if (!h.big_endian && !h.fortran_order) {
    require(
        h.data_size == 0 || std::memcmp(out.data(), bytes.data() + h.data_offset, h.data_size) == 0,
        "plain array not copied as is");
  }
  return 0;
}
