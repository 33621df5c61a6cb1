// Writing sharded checkpoints as transformers lays them out, and the sizes that bound shards.
#include <algorithm>
#include <cstdio>
#include <set>

#include "checkpoint/index.hpp"
#include "error/messages.hpp"
#include "safetensors/atomic_file.hpp"
#include "safetensors/checkpoint.hpp"
#include "safetensors/error.hpp"

namespace safetensors {
namespace {

namespace fs = std::filesystem;
using detail::quote;

struct Unit {
  std::string_view name;
  std::uint64_t multiplier;
};

constexpr Unit units[] = {
    {"b", 1},
    {"kb", 1'000},
    {"mb", 1'000'000},
    {"gb", 1'000'000'000},
    {"tb", 1'000'000'000'000},
    {"kib", std::uint64_t{1} << 10},
    {"mib", std::uint64_t{1} << 20},
    {"gib", std::uint64_t{1} << 30},
    {"tib", std::uint64_t{1} << 40},
};

// Fraction digits beyond this are below a byte for every unit up to TiB (2^40 < 10^13).
constexpr std::size_t max_fraction_digits = 13;

[[noreturn]] void bad_size(std::string_view text, std::string_view why) {
  throw Error(ErrorCode::invalid_argument, "size " + quote(text) + ": " + std::string(why));
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

std::string shard_file_name(const std::string& prefix, std::size_t index, std::size_t count) {
  char numbers[64];
  std::snprintf(numbers, sizeof numbers, "-%05zu-of-%05zu", index, count);
  return prefix + numbers + std::string(".safetensors");
}

void check_prefix(const std::string& prefix) {
  if (prefix.empty() || prefix == "." || prefix == ".." ||
      prefix.find_first_of(std::string_view("/\\\0", 3)) != std::string::npos) {
    throw Error(ErrorCode::invalid_argument,
                "shard prefix " + quote(prefix) +
                    " must be a plain file name (no `/`, `\\` or NUL, not `.` or `..`)");
  }
}

// `<prefix>-NNNNN-of-NNNNN.safetensors` with any number of digits (at least one).
bool is_shard_name(std::string_view name, std::string_view prefix) {
  constexpr std::string_view suffix = ".safetensors";
  if (name.size() < prefix.size() + suffix.size() || name.substr(0, prefix.size()) != prefix ||
      name.substr(name.size() - suffix.size()) != suffix) {
    return false;
  }
  std::string_view middle = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  const auto number = [&middle] {
    std::size_t n = 0;
    while (n < middle.size() && is_digit(middle[n])) ++n;
    middle.remove_prefix(n);
    return n > 0;
  };
  const auto literal = [&middle](std::string_view text) {
    if (middle.substr(0, text.size()) != text) return false;
    middle.remove_prefix(text.size());
    return true;
  };
  return literal("-") && number() && literal("-of-") && number() && middle.empty();
}

// A file left from an earlier write with another shard count would sit beside the new
// checkpoint and be taken for part of it (transformers loads `model.safetensors` before the
// index; our directory lookup prefers the index). Deleting a user's files is not ours to do,
// so such leftovers stop the write before anything is changed.
void refuse_leftovers(const fs::path& directory, const std::string& prefix,
                      const std::vector<std::string>& names) {
  const bool sharded = names.size() > 1;
  const std::set<std::string, std::less<>> planned(names.begin(), names.end());
  std::vector<std::string> leftovers;
  std::error_code ec;
  for (fs::directory_iterator it(directory, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().native();
    if (planned.count(name)) continue;
    if (is_shard_name(name, prefix) || (sharded && name == prefix + ".safetensors") ||
        (!sharded && name == index_file_name)) {
      leftovers.push_back(name);
    }
  }
  if (ec) {
    throw Error(ErrorCode::io, directory.native() + ": cannot list the directory: " + ec.message());
  }
  if (leftovers.empty()) return;
  std::sort(leftovers.begin(), leftovers.end());
  std::string list;
  for (const std::string& name : leftovers) list += (list.empty() ? "" : ", ") + quote(name);
  throw Error(ErrorCode::invalid_argument,
              directory.native() + ": refusing to write " + std::to_string(names.size()) +
                  " shard" + (sharded ? "s" : "") + " beside " + list +
                  ", left from an earlier write; they would not belong to the new checkpoint "
                  "but could be read as part of it. Remove them, or write to another directory");
}

}  // namespace

std::uint64_t parse_size(std::string_view text) {
  std::size_t i = 0;
  std::uint64_t whole = 0;
  for (; i < text.size() && is_digit(text[i]); ++i) {
    if (__builtin_mul_overflow(whole, std::uint64_t{10}, &whole) ||
        __builtin_add_overflow(whole, static_cast<std::uint64_t>(text[i] - '0'), &whole)) {
      bad_size(text, "larger than 2^64-1 bytes");
    }
  }
  if (i == 0) bad_size(text, "must start with a number of bytes, e.g. 5GB, 500MB, 2GiB or 123");
  std::uint64_t fraction = 0, scale = 1;
  if (i < text.size() && text[i] == '.') {
    const std::size_t start = ++i;
    for (; i < text.size() && is_digit(text[i]); ++i) {
      if (i - start < max_fraction_digits) {
        fraction = fraction * 10 + static_cast<std::uint64_t>(text[i] - '0');
        scale *= 10;
      }
    }
    if (i == start) bad_size(text, "a decimal point must be followed by digits");
  }
  std::string unit(text.substr(i));
  if (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
  for (char& c : unit) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  std::uint64_t multiplier = unit.empty() ? 1 : 0;
  for (const Unit& u : units) {
    if (unit == u.name) multiplier = u.multiplier;
  }
  if (multiplier == 0) {
    bad_size(text, "unknown unit " + quote(text.substr(i)) +
                       " (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)");
  }
  std::uint64_t bytes = 0;
  // Fractions of a byte are dropped, as transformers' int(float * unit) does.
  const auto part = static_cast<unsigned __int128>(fraction) * multiplier / scale;
  if (__builtin_mul_overflow(whole, multiplier, &bytes) ||
      __builtin_add_overflow(bytes, static_cast<std::uint64_t>(part), &bytes)) {
    bad_size(text, "larger than 2^64-1 bytes");
  }
  return bytes;
}

std::vector<std::filesystem::path> write_sharded(const std::filesystem::path& directory,
                                                 std::span<const TensorData> tensors,
                                                 const ShardOptions& options) {
  check_prefix(options.prefix);
  // The plan checks every tensor and gives the single-file writer's order to fill shards in.
  const WritePlan plan = plan_write(tensors, options.write);
  std::vector<std::vector<std::size_t>> shards(1);
  std::uint64_t filled = 0;
  for (std::size_t i : plan.order) {
    const std::uint64_t size = byte_size(tensors[i].dtype, tensors[i].shape).bytes;
    std::uint64_t after = 0;
    if (!shards.back().empty() &&
        (__builtin_add_overflow(filled, size, &after) || after > options.max_shard_size)) {
      shards.emplace_back();
      filled = 0;
    }
    shards.back().push_back(i);
    filled += size;
  }

  std::vector<std::string> names;
  if (shards.size() == 1) {
    names.push_back(options.prefix + ".safetensors");
  } else {
    for (std::size_t s = 0; s < shards.size(); ++s) {
      names.push_back(shard_file_name(options.prefix, s + 1, shards.size()));
    }
  }
  std::vector<std::pair<std::string, std::string>> weight_map;
  std::string index_json;
  if (shards.size() > 1) {
    for (std::size_t s = 0; s < shards.size(); ++s) {
      for (std::size_t i : shards[s]) weight_map.emplace_back(tensors[i].name, names[s]);
    }
    std::sort(weight_map.begin(), weight_map.end());
    // Built before any file is written, so a name the index cannot hold changes nothing.
    index_json = detail::checkpoint_index_json(weight_map, plan.data_size, options.write.metadata);
  }

  std::error_code ec;
  fs::create_directories(directory, ec);
  if (ec) {
    throw Error(ErrorCode::io,
                directory.native() + ": cannot create the directory: " + ec.message());
  }
  refuse_leftovers(directory, options.prefix, names);

  std::vector<fs::path> written;
  std::vector<TensorData> part;
  for (std::size_t s = 0; s < shards.size(); ++s) {
    part.clear();
    for (std::size_t i : shards[s]) part.push_back(tensors[i]);
    written.push_back(directory / names[s]);
    write_file(written.back(), part, options.write);
  }
  // Last, so the index never names a shard that is not complete yet.
  if (shards.size() > 1) {
    written.push_back(directory / index_file_name);
    AtomicFile index(written.back());
    index.write(std::as_bytes(std::span(index_json)));
    index.commit();
  }
  return written;
}

}  // namespace safetensors
