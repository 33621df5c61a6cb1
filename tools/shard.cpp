// `safetensors shard`: the union of the inputs written as transformers-style shards + index.
#include <fmt/core.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint_input.hpp"
#include "cli_common.hpp"
#include "progress.hpp"
#include "safetensors/safetensors.hpp"

namespace safetensors::cli {
namespace {

struct ShardCommandOptions {
  std::vector<std::string> inputs;
  std::string output;
  std::string max_shard_size = "5GB";
  std::string prefix = "model";
  bool json = false;
};

int run_shard(const ShardCommandOptions& options) {
  ShardOptions shard_options;
  shard_options.max_shard_size = parse_size(options.max_shard_size);
  shard_options.prefix = options.prefix;
  std::vector<Checkpoint> inputs;
  inputs.reserve(options.inputs.size());
  for (const std::string& input : options.inputs) inputs.push_back(Checkpoint::open(input));
  refuse_overwriting_inputs(inputs, options.output, true);

  TensorUnion merged;
  for (const Checkpoint& input : inputs) merged.add(input);
  if (const Metadata* metadata = merged.metadata()) shard_options.write.metadata = *metadata;
  TrackedWrite tracked("sharding", merged.tensors(), merged.bytes());
  const auto written = write_sharded(options.output, tracked.tensors(), shard_options);
  tracked.finish();
  const std::size_t shards = written.size() == 1 ? 1 : written.size() - 1;
  if (options.json) {
    std::vector<std::string> files;
    for (const std::filesystem::path& path : written) files.push_back(json_string(path.string()));
    fmt::print("{}\n", JsonObject()
                           .text("output", options.output)
                           .raw("files", json_array(files))
                           .number("shards", std::uint64_t{shards})
                           .number("tensors", std::uint64_t{merged.tensors().size()})
                           .number("bytes", merged.bytes())
                           .str());
    return 0;
  }
  for (const std::filesystem::path& path : written) fmt::print("{}\n", printable(path.string()));
  fmt::print("{}: {} tensors in {} shard{}, {} of data\n", printable(options.output),
             merged.tensors().size(), shards, shards == 1 ? "" : "s", human_size(merged.bytes()));
  return 0;
}

}  // namespace

Command add_shard(CLI::App& parent) {
  auto options = std::make_shared<ShardCommandOptions>();
  CLI::App* app = parent.add_subcommand(
      "shard",
      "Split tensors into transformers-style shards and an index\n\n"
      "Writes the union of the inputs' tensors and metadata into a directory as shards named "
      "like transformers' (model-00001-of-00003.safetensors) plus model.safetensors.index.json, "
      "filled in the canonical order (dtype order, then name). A shard is closed before a "
      "tensor that would make it exceed the maximum size; a larger tensor gets a shard of its "
      "own. When everything fits in one shard, only model.safetensors is written. Inputs are "
      "files, checkpoint directories or indexes (*.json); a tensor name in two inputs is an "
      "error. Files left in the directory by an earlier write with another shard count are "
      "refused rather than deleted.");
  app->add_option("IN", options->inputs, "Input files, checkpoint directories or indexes")
      ->required();
  app->add_option("-o,--output", options->output, "Output directory (created if missing)")
      ->required();
  app->add_option("--max-shard-size", options->max_shard_size,
                  "Largest shard in tensor bytes: 5GB (5*10^9), 500MB, 2GiB (2*2^30), 123")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            try {
              (void)parse_size(text);
            } catch (const Error& e) {
              return e.what();
            }
            return {};
          },
          "SIZE"))
      ->capture_default_str();
  app->add_option("--prefix", options->prefix, "Shard file names start with this")
      ->capture_default_str();
  app->add_flag("--json", options->json,
                "Print the summary as JSON: output, files (written, the index last), shards, "
                "tensors, bytes");
  return {app, [options] { return run_shard(*options); }};
}

}  // namespace safetensors::cli
