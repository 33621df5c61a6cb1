// `safetensors inspect`: the tensor table, totals and metadata of one file.
#include <fmt/core.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "safetensors/safetensors.hpp"

namespace safetensors::cli {
namespace {

struct InspectOptions {
  std::string path;
  std::string sort = "offset";
  bool json = false;
};

struct Totals {
  std::uint64_t parameters = 0;
  std::uint64_t bytes = 0;
  // Keyed by dtype name so the listing is in a stable, readable order.
  std::map<std::string, std::uint64_t> bytes_by_dtype;
};

Totals totals_of(const File& file) {
  Totals totals;
  for (const TensorInfo& t : file.tensors()) {
    totals.parameters += t.element_count();
    totals.bytes += t.byte_count();
    totals.bytes_by_dtype[std::string(dtype_name(t.dtype))] += t.byte_count();
  }
  return totals;
}

std::vector<const TensorInfo*> ordered_tensors(const File& file, const std::string& sort) {
  if (sort == "name") return file.tensors_by_name();
  std::vector<const TensorInfo*> order;
  for (const TensorInfo& t : file.tensors()) order.push_back(&t);
  return order;
}

std::string offsets_text(const TensorInfo& t) {
  return fmt::format("[{}, {})", t.data_begin, t.data_end);
}

void print_table(const File& file, const std::vector<const TensorInfo*>& tensors) {
  struct Row {
    std::string name, dtype, shape, bytes, offsets;
  };
  std::vector<Row> rows = {{"name", "dtype", "shape", "bytes", "offsets"}};
  for (const TensorInfo* t : tensors) {
    rows.push_back({printable(t->name), std::string(dtype_name(t->dtype)), shape_text(t->shape),
                    human_size(t->byte_count()), offsets_text(*t)});
  }
  std::size_t w[5] = {};
  for (const Row& r : rows) {
    w[0] = std::max(w[0], r.name.size());
    w[1] = std::max(w[1], r.dtype.size());
    w[2] = std::max(w[2], r.shape.size());
    w[3] = std::max(w[3], r.bytes.size());
  }
  fmt::print("{}\n", printable(file.name()));
  for (const Row& r : rows) {
    fmt::print("  {:<{}}  {:<{}}  {:<{}}  {:>{}}  {}\n", r.name, w[0], r.dtype, w[1], r.shape, w[2],
               r.bytes, w[3], r.offsets);
  }
}

void print_text(const File& file, const std::vector<const TensorInfo*>& tensors) {
  print_table(file, tensors);
  const Totals totals = totals_of(file);
  const std::uint64_t header_size = file.header().data_start - 8;
  fmt::print("\ntensors:     {}\n", file.size());
  fmt::print("parameters:  {} ({})\n", totals.parameters, human_count(totals.parameters));
  fmt::print("data bytes:  {} ({})\n", totals.bytes, human_size(totals.bytes));
  for (const auto& [dtype, bytes] : totals.bytes_by_dtype) {
    fmt::print("  {:<12} {} ({})\n", dtype, bytes, human_size(bytes));
  }
  fmt::print("header size: {} ({})\n", header_size, human_size(header_size));
  const auto& metadata = file.metadata();
  if (!metadata) {
    fmt::print("metadata:    none\n");
    return;
  }
  fmt::print("metadata:    {} key{}\n", metadata->size(), metadata->size() == 1 ? "" : "s");
  for (const auto& [key, value] : *metadata) {
    fmt::print("  {}: {}\n", printable(key), printable(value));
  }
}

std::string json_numbers(const std::vector<std::uint64_t>& values) {
  std::string out = "[";
  for (std::size_t i = 0; i < values.size(); ++i) {
    out += (i == 0 ? "" : ",") + std::to_string(values[i]);
  }
  return out + "]";
}

void print_json(const File& file, const std::vector<const TensorInfo*>& tensors) {
  std::string out = "{\"file\":" + json_string(file.name());
  out += ",\"header_size\":" + std::to_string(file.header().data_start - 8);
  out += ",\"metadata\":";
  if (const auto& metadata = file.metadata()) {
    out += "{";
    bool first = true;
    for (const auto& [key, value] : *metadata) {
      out += (first ? "" : ",") + json_string(key) + ":" + json_string(value);
      first = false;
    }
    out += "}";
  } else {
    out += "null";
  }
  out += ",\"tensors\":[";
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& t = *tensors[i];
    out += i == 0 ? "{" : ",{";
    out += "\"name\":" + json_string(t.name);
    out += ",\"dtype\":" + json_string(dtype_name(t.dtype));
    out += ",\"shape\":" + json_numbers(t.shape);
    out += ",\"data_offsets\":" + json_numbers({t.data_begin, t.data_end});
    out += ",\"bytes\":" + std::to_string(t.byte_count()) + "}";
  }
  const Totals totals = totals_of(file);
  out += "],\"totals\":{\"tensors\":" + std::to_string(file.size());
  out += ",\"parameters\":" + std::to_string(totals.parameters);
  out += ",\"bytes\":" + std::to_string(totals.bytes);
  out += ",\"bytes_by_dtype\":{";
  bool first = true;
  for (const auto& [dtype, bytes] : totals.bytes_by_dtype) {
    out += (first ? "" : ",") + json_string(dtype) + ":" + std::to_string(bytes);
    first = false;
  }
  out += "}}}\n";
  fmt::print("{}", out);
}

}  // namespace

Command add_inspect(CLI::App& parent) {
  auto options = std::make_shared<InspectOptions>();
  CLI::App* app = parent.add_subcommand(
      "inspect",
      "Show a file's tensors (name, dtype, shape, size, data offsets), totals per dtype, the "
      "header size and the metadata. The file is validated first.");
  app->add_option("FILE", options->path, "The .safetensors file")->required();
  app->add_option("--sort", options->sort, "Row order: offset (data order) or name")
      ->check(CLI::IsMember({"offset", "name"}))
      ->capture_default_str();
  app->add_flag("--json", options->json,
                "Print one JSON object: file, header_size, metadata, tensors, totals");
  return {app, [options] {
            const File file = File::open(options->path);
            const auto tensors = ordered_tensors(file, options->sort);
            if (options->json) {
              print_json(file, tensors);
            } else {
              print_text(file, tensors);
            }
            return 0;
          }};
}

}  // namespace safetensors::cli
