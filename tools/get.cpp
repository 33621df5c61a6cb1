// `safetensors get`: one tensor's description and its first values, decoded.
#include <fmt/core.h>

#include <algorithm>
#include <memory>
#include <string>

#include "cli_common.hpp"
#include "safetensors/safetensors.hpp"

namespace safetensors::cli {
namespace {

struct GetOptions {
  std::string path;
  std::string name;
  std::uint64_t count = 16;
};

int run_get(const GetOptions& options) {
  const File file = File::open(options.path);
  const TensorInfo& info = file.info(options.name);
  const std::uint64_t elements = info.element_count();
  const std::uint64_t shown = std::min(options.count, elements);

  // Only the bytes holding the shown elements are touched.
  const std::uint64_t needed = (shown * dtype_bits(info.dtype) + 7) / 8;
  std::vector<std::byte> copy;
  std::span<const std::byte> data;
  if (file.zero_copy()) {
    data = file.view(info).data.first(needed);
  } else {
    copy = file.read(info.name);
    data = std::span<const std::byte>(copy).first(needed);
  }

  fmt::print("name:   {}\n", printable(info.name));
  fmt::print("dtype:  {}\n", dtype_name(info.dtype));
  fmt::print("shape:  {}\n", shape_text(info.shape));
  fmt::print("bytes:  {} ({})\n", info.byte_count(), human_size(info.byte_count()));
  std::string values;
  for (std::uint64_t i = 0; i < shown; ++i) {
    values += (i == 0 ? "" : ", ") + format_element(info.dtype, data, i);
  }
  if (shown < elements) values += shown == 0 ? "..." : ", ...";
  fmt::print("values: [{}]  ({} of {})\n", values, shown, elements);
  return 0;
}

}  // namespace

Command add_get(CLI::App& parent) {
  auto options = std::make_shared<GetOptions>();
  CLI::App* app = parent.add_subcommand(
      "get",
      "Show one tensor's dtype, shape and byte count and its first values in C order, decoded "
      "for every dtype (floats with the shortest text that round-trips).");
  app->add_option("FILE", options->path, "The .safetensors file")->required();
  app->add_option("NAME", options->name, "Tensor name")->required();
  app->add_option("-n,--count", options->count, "How many values to print")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  return {app, [options] { return run_get(*options); }};
}

}  // namespace safetensors::cli
