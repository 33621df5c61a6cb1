// libFuzzer target for the data-only unpickler: any input is parsed in strict and in scan
// mode. Strict mode may only throw safetensors::Error, scan mode must never throw, both must
// agree, and every value id must point into the arena. Anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "../src/pickle/unpickler.hpp"
#include "require.hpp"
#include "safetensors/error.hpp"

namespace {

using safetensors::detail::pickle::Pickle;
using safetensors::detail::pickle::ValueId;

using fuzz::require;

void check_arena(const Pickle& p, std::size_t input_size) {
  const auto valid = [&](ValueId id) { return id < p.values.size(); };
  require(!p.values.empty(), "no shared None");
  require(valid(p.root), "root out of range");
  require(p.end_offset <= input_size, "end_offset beyond the input");
  for (const auto& v : p.values) {
    require(valid(v.callee) && valid(v.args) && valid(v.state), "reference out of range");
    for (ValueId item : v.items) require(valid(item), "item out of range");
  }
}

safetensors::detail::pickle::Options options(safetensors::detail::pickle::Mode mode) {
  safetensors::detail::pickle::Options o;
  o.mode = mode;
  o.max_values = 1u << 20;  // keeps libFuzzer's memory limit out of reach
  o.max_memo_entries = 1u << 16;
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace pk = safetensors::detail::pickle;
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);

  std::optional<Pickle> strict;
  std::optional<safetensors::ErrorCode> strict_error;
  try {
    strict = pk::unpickle(bytes, options(pk::Mode::strict), "fuzz");
  } catch (const safetensors::Error& e) {
    strict_error = e.code();
  }
  const Pickle scan = pk::unpickle(bytes, options(pk::Mode::scan), "fuzz");
  check_arena(scan, size);

  bool dangerous = false;
  for (const auto& f : scan.findings) dangerous = dangerous || f.dangerous;
  if (strict) {
    check_arena(*strict, size);
    require(strict->complete && strict->findings.empty(), "strict result incomplete");
    require(scan.complete && !dangerous, "scan disagrees with an accepted pickle");
    require(scan.end_offset == strict->end_offset, "scan and strict end at different offsets");
    for (const auto& g : strict->globals) require(g.allowed, "strict accepted a forbidden global");
  } else if (*strict_error == safetensors::ErrorCode::invalid_pickle) {
    require(!scan.complete && !dangerous, "scan completes a pickle strict finds malformed");
  } else {
    require(*strict_error == safetensors::ErrorCode::forbidden_pickle, "unexpected error code");
    require(dangerous || !scan.complete, "scan misses what strict forbids");
  }
  return 0;
}
