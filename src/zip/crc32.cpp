#include "zip/crc32.hpp"

#include <zlib.h>

#include <algorithm>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#define SAFETENSORS_CRC_CLMUL 1
#endif

namespace safetensors::detail::zip {
namespace {

std::uint32_t zlib_crc(std::uint32_t crc, const std::byte* data, std::size_t size) noexcept {
  return static_cast<std::uint32_t>(crc32_z(crc, reinterpret_cast<const Bytef*>(data), size));
}

#ifdef SAFETENSORS_CRC_CLMUL
// Folding constants for the reflected CRC-32 polynomial: x^(k) mod P(x) for the distances
// the folds span (4 x 128 bits, 128 bits, 64 bits), then Barrett's mu and P itself. These
// are the published values of Intel's "Fast CRC Computation for Generic Polynomials Using
// PCLMULQDQ" for the gzip polynomial.
constexpr long long fold_by_four_low = 0x154442bd4;
constexpr long long fold_by_four_high = 0x1c6e41596;
constexpr long long fold_by_one_low = 0x1751997d0;
constexpr long long fold_by_one_high = 0x0ccaa009e;
constexpr long long fold_64_to_32 = 0x163cd6124;
constexpr long long barrett_poly = 0x1db710641;
constexpr long long barrett_mu = 0x1f7011641;

__attribute__((target("pclmul,sse4.1"))) inline __m128i fold(__m128i x, __m128i k, __m128i next) {
  const __m128i low = _mm_clmulepi64_si128(x, k, 0x00);
  const __m128i high = _mm_clmulepi64_si128(x, k, 0x11);
  return _mm_xor_si128(_mm_xor_si128(low, high), next);
}

__attribute__((target("pclmul,sse4.1"))) inline __m128i load(const std::byte* p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}

// The raw (not inverted) CRC register after `size` bytes, `size` a multiple of 16 and at
// least 64.
__attribute__((target("pclmul,sse4.1"))) std::uint32_t clmul_crc(std::uint32_t state,
                                                                 const std::byte* p,
                                                                 std::size_t size) {
  __m128i x0 = _mm_xor_si128(load(p), _mm_cvtsi32_si128(static_cast<int>(state)));
  __m128i x1 = load(p + 16);
  __m128i x2 = load(p + 32);
  __m128i x3 = load(p + 48);
  p += 64;
  size -= 64;
  const __m128i by_four = _mm_set_epi64x(fold_by_four_high, fold_by_four_low);
  for (; size >= 64; p += 64, size -= 64) {
    x0 = fold(x0, by_four, load(p));
    x1 = fold(x1, by_four, load(p + 16));
    x2 = fold(x2, by_four, load(p + 32));
    x3 = fold(x3, by_four, load(p + 48));
  }
  const __m128i by_one = _mm_set_epi64x(fold_by_one_high, fold_by_one_low);
  __m128i x = fold(x0, by_one, x1);
  x = fold(x, by_one, x2);
  x = fold(x, by_one, x3);
  for (; size >= 16; p += 16, size -= 16) x = fold(x, by_one, load(p));

  // 128 bits to 64: the low half times x^64 mod P, added to the high half.
  x = _mm_xor_si128(_mm_clmulepi64_si128(x, by_one, 0x10), _mm_srli_si128(x, 8));
  // 64 bits to 32 (still to be reduced).
  const __m128i low32 = _mm_setr_epi32(-1, 0, 0, 0);
  x = _mm_xor_si128(
      _mm_clmulepi64_si128(_mm_and_si128(x, low32), _mm_cvtsi64_si128(fold_64_to_32), 0x00),
      _mm_srli_si128(x, 4));
  // Barrett reduction to the final 32 bits.
  const __m128i barrett = _mm_set_epi64x(barrett_mu, barrett_poly);
  __m128i t = _mm_clmulepi64_si128(_mm_and_si128(x, low32), barrett, 0x10);
  t = _mm_clmulepi64_si128(_mm_and_si128(t, low32), barrett, 0x00);
  return static_cast<std::uint32_t>(_mm_extract_epi32(_mm_xor_si128(x, t), 1));
}

bool has_clmul() noexcept {
  static const bool supported =
      __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
  return supported;
}
#endif

}  // namespace

std::uint32_t crc32_update(std::uint32_t crc, std::span<const std::byte> bytes) noexcept {
  const std::byte* p = bytes.data();
  std::size_t size = bytes.size();
#ifdef SAFETENSORS_CRC_CLMUL
  // Below a few hundred bytes zlib's tables are as fast and the set-up is not worth it.
  if (size >= 256 && has_clmul()) {
    const std::size_t bulk = size & ~std::size_t{15};
    crc = ~clmul_crc(~crc, p, bulk);
    p += bulk;
    size -= bulk;
  }
#endif
  return zlib_crc(crc, p, size);
}

std::uint32_t crc32_parallel(std::span<const std::byte> bytes) {
  // Below this a thread costs more than it saves.
  constexpr std::size_t min_piece = std::size_t{16} << 20;
  const std::size_t cores = std::max(1u, std::thread::hardware_concurrency());
  const std::size_t pieces = std::min(cores, bytes.size() / min_piece);
  if (pieces < 2) return crc32_update(0, bytes);
  const std::size_t piece = bytes.size() / pieces;
  std::vector<std::uint32_t> crcs(pieces);
  const auto part = [&](std::size_t k) {
    return bytes.subspan(k * piece, k + 1 == pieces ? bytes.size() - k * piece : piece);
  };
  std::size_t started = 1;
  {
    // jthreads join on every way out; a piece whose thread could not start (a process or
    // thread limit) is done here instead.
    std::vector<std::jthread> helpers;
    try {
      for (; started < pieces; ++started) {
        helpers.emplace_back([&, k = started] { crcs[k] = crc32_update(0, part(k)); });
      }
    } catch (const std::system_error&) {
    }
    for (std::size_t k = started; k < pieces; ++k) crcs[k] = crc32_update(0, part(k));
    crcs[0] = crc32_update(0, part(0));
  }
  std::uint32_t crc = crcs[0];
  for (std::size_t k = 1; k < pieces; ++k) {
    crc = static_cast<std::uint32_t>(
        crc32_combine64(crc, crcs[k], static_cast<z_off64_t>(part(k).size())));
  }
  return crc;
}

}  // namespace safetensors::detail::zip
