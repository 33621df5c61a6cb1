// `safetensors get`: one tensor's description and its first values, decoded.
#include <fmt/core.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "safetensors/safetensors.hpp"

namespace safetensors::cli {
namespace {

struct GetOptions {
  std::string path;
  std::string name;
  std::uint64_t count = 16;
  bool json = false;
};

// The description, then "values: [1, 2, ...]  (2 of 20)".
void print_text(const TensorInfo& info, const std::vector<std::string>& values) {
  fmt::print("name:   {}\n", printable(info.name));
  fmt::print("dtype:  {}\n", dtype_name(info.dtype));
  fmt::print("shape:  {}\n", shape_text(info.shape));
  fmt::print("bytes:  {} ({})\n", info.byte_count(), human_size(info.byte_count()));
  std::string text;
  for (const std::string& value : values) text += (text.empty() ? "" : ", ") + value;
  const std::uint64_t elements = info.element_count();
  if (values.size() < elements) text += values.empty() ? "..." : ", ...";
  fmt::print("values: [{}]  ({} of {})\n", text, values.size(), elements);
}

// The same as one object; "values" holds the first ones only, "elements" says how many exist.
void print_json(const std::string& path, const TensorInfo& info,
                const std::vector<std::string>& values) {
  std::vector<std::string> encoded;
  encoded.reserve(values.size());
  for (const std::string& value : values) encoded.push_back(json_element(value));
  JsonObject out;
  out.text("file", path)
      .text("name", info.name)
      .text("dtype", dtype_name(info.dtype))
      .raw("shape", json_numbers(info.shape))
      .raw("data_offsets", json_numbers({info.data_begin, info.data_end}))
      .number("bytes", info.byte_count())
      .number("elements", info.element_count())
      .raw("values", json_array(encoded));
  fmt::print("{}\n", out.str());
}

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

  std::vector<std::string> values;
  for (std::uint64_t i = 0; i < shown; ++i) values.push_back(format_element(info.dtype, data, i));
  if (options.json) {
    print_json(options.path, info, values);
  } else {
    print_text(info, values);
  }
  return 0;
}

}  // namespace

Command add_get(CLI::App& parent) {
  auto options = std::make_shared<GetOptions>();
  CLI::App* app = parent.add_subcommand(
      "get",
      "Show one tensor's dtype, shape and first values\n\n"
      "Shows the tensor's dtype, shape and byte count and its first values in C order, decoded "
      "for every dtype (floats with the shortest text that round-trips). Only the bytes of the "
      "values shown are read. With --json, one object: file, name, dtype, shape, data_offsets, "
      "bytes, elements and values (the first -n of them: numbers, true/false for BOOL, and "
      "strings for what JSON has no number for: \"nan\", \"inf\", \"-inf\" and complex "
      "\"(re, im)\").");
  app->add_option("FILE", options->path, "The .safetensors file")->required();
  app->add_option("NAME", options->name, "Tensor name")->required();
  app->add_option("-n,--count", options->count, "How many values to print")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app->add_flag("--json", options->json, "Print the tensor and its values as JSON");
  return {app, [options] { return run_get(*options); }};
}

}  // namespace safetensors::cli
