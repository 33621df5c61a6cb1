// `safetensors merge`: the union of several files' tensors and metadata, written canonically.
#include <fmt/core.h>

#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "safetensors/safetensors.hpp"

namespace safetensors::cli {
namespace {

namespace fs = std::filesystem;

struct MergeOptions {
  std::vector<std::string> inputs;
  std::string output;
  std::uint64_t alignment = 8;
};

bool same_file(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  if (fs::equivalent(a, b, ec)) return true;
  // equivalent() needs both to exist; compare spellings for a not-yet-existing output.
  std::error_code ec_a, ec_b;
  const fs::path canonical_a = fs::weakly_canonical(a, ec_a);
  const fs::path canonical_b = fs::weakly_canonical(b, ec_b);
  return !ec_a && !ec_b && canonical_a == canonical_b;
}

void check_output_path(const MergeOptions& options) {
  for (const std::string& input : options.inputs) {
    if (same_file(input, options.output)) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("refusing to write {}: it is also an input", options.output));
    }
  }
}

// Gathers the union of tensors and metadata, refusing any name or key that two inputs
// disagree on. Tensor bytes stay in the inputs' mappings (or `copies` where a file is not
// mapped), so memory use does not grow with the data.
struct Union {
  std::vector<TensorData> tensors;
  std::optional<Metadata> metadata;
  std::deque<std::vector<std::byte>> copies;
};

void add_file(Union& merged, const File& file, std::map<std::string, std::string>& tensor_origin,
              std::map<std::string, std::string>& key_origin) {
  if (const auto& metadata = file.metadata()) {
    if (!merged.metadata) merged.metadata.emplace();
    for (const auto& [key, value] : *metadata) {
      auto [it, inserted] = merged.metadata->emplace(key, value);
      if (!inserted && it->second != value) {
        throw Error(
            ErrorCode::duplicate_key,
            fmt::format("metadata key {} is {} in {} but {} in {}", json_string(key),
                        json_string(it->second), key_origin[key], json_string(value), file.name()));
      }
      key_origin.emplace(key, file.name());
    }
  }
  for (const TensorInfo& info : file.tensors()) {
    auto [it, inserted] = tensor_origin.emplace(info.name, file.name());
    if (!inserted) {
      throw Error(ErrorCode::duplicate_key,
                  fmt::format("tensor {} is in both {} and {}", json_string(info.name), it->second,
                              file.name()));
    }
    std::span<const std::byte> bytes;
    if (file.zero_copy()) {
      bytes = file.view(info).data;
    } else {
      bytes = merged.copies.emplace_back(file.read(info.name));
    }
    merged.tensors.push_back(TensorData::from_bytes(info.name, info.dtype, info.shape, bytes));
  }
}

int run_merge(const MergeOptions& options) {
  check_output_path(options);
  std::vector<File> files;
  files.reserve(options.inputs.size());
  for (const std::string& input : options.inputs) files.push_back(File::open(input));

  Union merged;
  std::map<std::string, std::string> tensor_origin, key_origin;
  for (const File& file : files) add_file(merged, file, tensor_origin, key_origin);

  write_file(options.output, merged.tensors, WriteOptions{merged.metadata, options.alignment});
  std::uint64_t bytes = 0;
  for (const TensorData& t : merged.tensors) bytes += t.bytes.size();
  fmt::print("{}: {} tensors from {} files, {} of data\n", printable(options.output),
             merged.tensors.size(), files.size(), human_size(bytes));
  return 0;
}

}  // namespace

Command add_merge(CLI::App& parent) {
  auto options = std::make_shared<MergeOptions>();
  CLI::App* app = parent.add_subcommand(
      "merge",
      "Write the union of the inputs' tensors and metadata to one file, in the canonical "
      "layout (dtype order, then name). A tensor name in two inputs, or a metadata key with "
      "two different values, is an error. The output is written atomically.");
  app->add_option("IN", options->inputs, "Input files")->required();
  app->add_option("-o,--output", options->output, "Output file")->required();
  app->add_option("--align", options->alignment,
                  "Pad the header so tensor data starts at a multiple of N bytes (a power of "
                  "two, at least 8; e.g. 4096 for direct I/O)")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            std::uint64_t n = 0;
            if (!CLI::detail::lexical_cast(text, n) || n < 8 || (n & (n - 1)) != 0) {
              return "alignment must be a power of two of at least 8, not " + text;
            }
            return {};
          },
          "POWER OF TWO >= 8"))
      ->capture_default_str();
  return {app, [options] { return run_merge(*options); }};
}

}  // namespace safetensors::cli
