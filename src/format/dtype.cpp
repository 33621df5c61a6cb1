#include "safetensors/dtype.hpp"

#include <array>

namespace safetensors {
namespace {

struct DtypeFacts {
  Dtype dtype;
  std::string_view name;
  unsigned bits;
  unsigned write_rank;
};

// Indexed by the enumerator value. write_rank follows docs/FORMAT.md "Writing".
constexpr std::array<DtypeFacts, dtype_count> facts = {{
    {Dtype::BOOL, "BOOL", 8, 21},
    {Dtype::U8, "U8", 8, 17},
    {Dtype::I8, "I8", 8, 16},
    {Dtype::F8_E5M2, "F8_E5M2", 8, 15},
    {Dtype::F8_E4M3, "F8_E4M3", 8, 14},
    {Dtype::F8_E8M0, "F8_E8M0", 8, 13},
    {Dtype::F8_E4M3FNUZ, "F8_E4M3FNUZ", 8, 12},
    {Dtype::F8_E5M2FNUZ, "F8_E5M2FNUZ", 8, 11},
    {Dtype::I16, "I16", 16, 10},
    {Dtype::U16, "U16", 16, 9},
    {Dtype::F16, "F16", 16, 8},
    {Dtype::BF16, "BF16", 16, 7},
    {Dtype::I32, "I32", 32, 6},
    {Dtype::U32, "U32", 32, 5},
    {Dtype::F32, "F32", 32, 4},
    {Dtype::I64, "I64", 64, 1},
    {Dtype::U64, "U64", 64, 0},
    {Dtype::F64, "F64", 64, 2},
    {Dtype::C64, "C64", 64, 3},
    {Dtype::F4, "F4", 4, 20},
    {Dtype::F6_E2M3, "F6_E2M3", 6, 19},
    {Dtype::F6_E3M2, "F6_E3M2", 6, 18},
}};

constexpr bool facts_are_indexed_by_enumerator() {
  for (std::size_t i = 0; i < facts.size(); ++i) {
    if (static_cast<std::size_t>(facts[i].dtype) != i) return false;
  }
  return true;
}
static_assert(facts_are_indexed_by_enumerator());

constexpr std::array<Dtype, dtype_count> enumerators = [] {
  std::array<Dtype, dtype_count> all{};
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = facts[i].dtype;
  return all;
}();

const DtypeFacts& facts_of(Dtype dtype) noexcept {
  return facts[static_cast<std::size_t>(dtype)];
}

}  // namespace

std::span<const Dtype> all_dtypes() noexcept {
  return enumerators;
}

std::string_view dtype_name(Dtype dtype) noexcept {
  return facts_of(dtype).name;
}

std::optional<Dtype> dtype_from_name(std::string_view name) noexcept {
  for (const auto& f : facts) {
    if (f.name == name) return f.dtype;
  }
  return std::nullopt;
}

unsigned dtype_bits(Dtype dtype) noexcept {
  return facts_of(dtype).bits;
}

unsigned dtype_write_rank(Dtype dtype) noexcept {
  return facts_of(dtype).write_rank;
}

std::optional<std::uint64_t> element_count(std::span<const std::uint64_t> shape) noexcept {
  std::uint64_t count = 1;
  for (std::uint64_t dim : shape) {
    if (__builtin_mul_overflow(count, dim, &count)) return std::nullopt;
  }
  return count;
}

ByteSize byte_size(Dtype dtype, std::span<const std::uint64_t> shape) noexcept {
  std::optional<std::uint64_t> count = element_count(shape);
  std::uint64_t bits = 0;
  if (!count || __builtin_mul_overflow(*count, std::uint64_t{dtype_bits(dtype)}, &bits)) {
    return {0, SizeProblem::overflow};
  }
  if (bits % 8 != 0) return {0, SizeProblem::misaligned};
  return {bits / 8, SizeProblem::none};
}

}  // namespace safetensors
