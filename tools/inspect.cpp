// `safetensors inspect`: the tensor table, totals and metadata of one file or checkpoint.
#include <fmt/core.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint_input.hpp"
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

// One shard of a checkpoint as listed.
struct Shard {
  std::string label;
  std::size_t tensors = 0;
  std::uint64_t bytes = 0;
  std::uint64_t header_size = 0;
};

// What is shown: a single file (no shards) or a checkpoint's shards, and the tensors in the
// order asked for, each with the shard it is in.
struct Listing {
  std::string title;
  std::vector<const TensorInfo*> tensors;
  std::vector<std::size_t> shard_of;   // parallel to `tensors`; unused for a single file
  std::vector<Shard> shards;           // empty for a single file
  std::uint64_t header_size = 0;       // single file only
  const Metadata* metadata = nullptr;  // borrowed from the file or checkpoint

  bool sharded() const noexcept { return !shards.empty(); }
};

Totals totals_of(const std::vector<const TensorInfo*>& tensors) {
  Totals totals;
  for (const TensorInfo* t : tensors) {
    totals.parameters += t->element_count();
    totals.bytes += t->byte_count();
    totals.bytes_by_dtype[std::string(dtype_name(t->dtype))] += t->byte_count();
  }
  return totals;
}

Listing file_listing(const File& file, const std::string& sort) {
  Listing listing;
  listing.title = file.name();
  if (sort == "name") {
    listing.tensors = file.tensors_by_name();
  } else {
    for (const TensorInfo& t : file.tensors()) listing.tensors.push_back(&t);
  }
  listing.header_size = file.header().data_start - 8;
  if (file.metadata()) listing.metadata = &*file.metadata();
  return listing;
}

// "offset" order for a checkpoint is shard order, then data order within each shard.
Listing checkpoint_listing(const Checkpoint& checkpoint, const std::string& sort) {
  if (checkpoint.index_path().empty()) return file_listing(checkpoint.files().front(), sort);
  Listing listing;
  listing.title = checkpoint.index_path().string();
  if (checkpoint.metadata()) listing.metadata = &*checkpoint.metadata();
  const std::vector<File>& files = checkpoint.files();
  for (std::size_t f = 0; f < files.size(); ++f) {
    Shard shard{shard_label(checkpoint, files[f]), files[f].size(), 0,
                files[f].header().data_start - 8};
    for (const TensorInfo& t : files[f].tensors()) shard.bytes += t.byte_count();
    listing.shards.push_back(std::move(shard));
  }
  if (sort == "name") {
    for (const CheckpointTensor& t : checkpoint.tensors()) {
      listing.tensors.push_back(t.info);
      listing.shard_of.push_back(static_cast<std::size_t>(t.file - files.data()));
    }
  } else {
    for (std::size_t f = 0; f < files.size(); ++f) {
      for (const TensorInfo& t : files[f].tensors()) {
        listing.tensors.push_back(&t);
        listing.shard_of.push_back(f);
      }
    }
  }
  return listing;
}

std::string offsets_text(const TensorInfo& t) {
  return fmt::format("[{}, {})", t.data_begin, t.data_end);
}

void print_table(const Listing& listing) {
  struct Row {
    std::string name, dtype, shape, bytes, shard, offsets;
  };
  std::vector<Row> rows = {{"name", "dtype", "shape", "bytes", "shard", "offsets"}};
  for (std::size_t i = 0; i < listing.tensors.size(); ++i) {
    const TensorInfo* t = listing.tensors[i];
    rows.push_back({printable(t->name), std::string(dtype_name(t->dtype)), shape_text(t->shape),
                    human_size(t->byte_count()),
                    listing.sharded() ? printable(listing.shards[listing.shard_of[i]].label) : "",
                    offsets_text(*t)});
  }
  std::size_t w[5] = {};
  for (const Row& r : rows) {
    w[0] = std::max(w[0], r.name.size());
    w[1] = std::max(w[1], r.dtype.size());
    w[2] = std::max(w[2], r.shape.size());
    w[3] = std::max(w[3], r.bytes.size());
    w[4] = std::max(w[4], r.shard.size());
  }
  fmt::print("{}\n", printable(listing.title));
  for (const Row& r : rows) {
    fmt::print("  {:<{}}  {:<{}}  {:<{}}  {:>{}}  ", r.name, w[0], r.dtype, w[1], r.shape, w[2],
               r.bytes, w[3]);
    if (listing.sharded()) fmt::print("{:<{}}  ", r.shard, w[4]);
    fmt::print("{}\n", r.offsets);
  }
}

void print_text(const Listing& listing) {
  print_table(listing);
  const Totals totals = totals_of(listing.tensors);
  fmt::print("\ntensors:     {}\n", listing.tensors.size());
  if (listing.sharded()) {
    fmt::print("shards:      {}\n", listing.shards.size());
    for (const Shard& shard : listing.shards) {
      fmt::print("  {}: {} tensor{}, {} ({})\n", printable(shard.label), shard.tensors,
                 shard.tensors == 1 ? "" : "s", shard.bytes, human_size(shard.bytes));
    }
  }
  fmt::print("parameters:  {} ({})\n", totals.parameters, human_count(totals.parameters));
  fmt::print("data bytes:  {} ({})\n", totals.bytes, human_size(totals.bytes));
  for (const auto& [dtype, bytes] : totals.bytes_by_dtype) {
    fmt::print("  {:<12} {} ({})\n", dtype, bytes, human_size(bytes));
  }
  std::uint64_t header_size = listing.header_size;
  for (const Shard& shard : listing.shards) header_size += shard.header_size;
  fmt::print("header size: {} ({}){}\n", header_size, human_size(header_size),
             listing.sharded() ? " in all shards" : "");
  const auto& metadata = listing.metadata;
  if (!metadata) {
    fmt::print("metadata:    none\n");
    return;
  }
  fmt::print("metadata:    {} key{}\n", metadata->size(), metadata->size() == 1 ? "" : "s");
  for (const auto& [key, value] : *metadata) {
    fmt::print("  {}: {}\n", printable(key), printable(value));
  }
}

std::string json_shards(const std::vector<Shard>& shards) {
  std::string out = "[";
  for (std::size_t i = 0; i < shards.size(); ++i) {
    out += i == 0 ? "{" : ",{";
    out += "\"file\":" + json_string(shards[i].label);
    out += ",\"tensors\":" + std::to_string(shards[i].tensors);
    out += ",\"bytes\":" + std::to_string(shards[i].bytes);
    out += ",\"header_size\":" + std::to_string(shards[i].header_size) + "}";
  }
  return out + "]";
}

// A checkpoint has "shards" where a file has "header_size", and a "shard" for each tensor.
void print_json(const Listing& listing) {
  std::string out = "{\"file\":" + json_string(listing.title);
  if (listing.sharded()) {
    out += ",\"shards\":" + json_shards(listing.shards);
  } else {
    out += ",\"header_size\":" + std::to_string(listing.header_size);
  }
  out += ",\"metadata\":";
  if (const auto& metadata = listing.metadata) {
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
  for (std::size_t i = 0; i < listing.tensors.size(); ++i) {
    const TensorInfo& t = *listing.tensors[i];
    out += i == 0 ? "{" : ",{";
    out += "\"name\":" + json_string(t.name);
    out += ",\"dtype\":" + json_string(dtype_name(t.dtype));
    out += ",\"shape\":" + json_numbers(t.shape);
    out += ",\"data_offsets\":" + json_numbers({t.data_begin, t.data_end});
    out += ",\"bytes\":" + std::to_string(t.byte_count());
    if (listing.sharded())
      out += ",\"shard\":" + json_string(listing.shards[listing.shard_of[i]].label);
    out += "}";
  }
  const Totals totals = totals_of(listing.tensors);
  out += "],\"totals\":{\"tensors\":" + std::to_string(listing.tensors.size());
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
      "List the tensors, totals and metadata of a file\n\n"
      "Shows a file's tensors (name, dtype, shape, size, data offsets), totals per dtype, the "
      "header size and the metadata. The file is validated first. A directory or an index "
      "(*.json) is shown as a sharded checkpoint: each tensor's shard, and a summary per "
      "shard.");
  app->add_option("FILE", options->path, "The .safetensors file, checkpoint directory or index")
      ->required();
  app->add_option("--sort", options->sort,
                  "Row order: offset (data order; shard by shard for a checkpoint) or name")
      ->check(CLI::IsMember({"offset", "name"}))
      ->capture_default_str();
  app->add_flag("--json", options->json,
                "Print one JSON object: file, header_size, metadata, tensors, totals; for a "
                "checkpoint, shards instead of header_size and a shard for each tensor");
  return {app, [options] {
            // Declared here so the listing's pointers stay valid while it is printed.
            std::optional<Checkpoint> checkpoint;
            std::optional<File> file;
            Listing listing;
            if (is_checkpoint_path(options->path)) {
              checkpoint = Checkpoint::open(options->path);
              listing = checkpoint_listing(*checkpoint, options->sort);
            } else {
              file = File::open(options->path);
              listing = file_listing(*file, options->sort);
            }
            if (options->json) {
              print_json(listing);
            } else {
              print_text(listing);
            }
            return 0;
          }};
}

}  // namespace safetensors::cli
