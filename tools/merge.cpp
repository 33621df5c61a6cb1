// `safetensors merge`: the union of several files' or checkpoints' tensors and metadata,
// written canonically to one file.
#include <fmt/core.h>

#include <memory>
#include <string>
#include <vector>

#include "checkpoint_input.hpp"
#include "cli_common.hpp"
#include "progress.hpp"
#include "safetensors/safetensors.hpp"

namespace safetensors::cli {
namespace {

struct MergeOptions {
  std::vector<std::string> inputs;
  std::string output;
  std::uint64_t alignment = 8;
  bool json = false;
};

int run_merge(const MergeOptions& options) {
  std::vector<Checkpoint> inputs;
  inputs.reserve(options.inputs.size());
  for (const std::string& input : options.inputs) inputs.push_back(Checkpoint::open(input));
  refuse_overwriting_inputs(inputs, options.output, false);

  TensorUnion merged;
  for (const Checkpoint& input : inputs) merged.add(input);
  WriteOptions write;
  write.borrowed_metadata = merged.metadata();
  write.alignment = options.alignment;
  TrackedWrite tracked("merging", merged.tensors(), merged.bytes());
  write_file(options.output, tracked.tensors(), write);
  tracked.finish();
  if (options.json) {
    fmt::print("{}\n", JsonObject()
                           .text("output", options.output)
                           .number("tensors", std::uint64_t{merged.tensors().size()})
                           .number("files", std::uint64_t{merged.files()})
                           .number("bytes", merged.bytes())
                           .str());
  } else {
    fmt::print("{}: {} tensors from {} files, {} of data\n", printable(options.output),
               merged.tensors().size(), merged.files(), human_size(merged.bytes()));
  }
  return 0;
}

}  // namespace

Command add_merge(CLI::App& parent) {
  auto options = std::make_shared<MergeOptions>();
  CLI::App* app = parent.add_subcommand(
      "merge",
      "Write the union of several inputs to one file\n\n"
      "Writes the union of the inputs' tensors and metadata to one file, in the canonical "
      "layout (dtype order, then name). An input is a file, a sharded checkpoint's directory "
      "or its index (*.json). A tensor name in two inputs, or a metadata key with two "
      "different values, is an error. The output is written atomically.");
  app->add_option("IN", options->inputs, "Input files, checkpoint directories or indexes")
      ->required();
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
  app->add_flag("--json", options->json,
                "Print the summary as JSON: output, tensors, files, bytes (of tensor data)");
  return {app, [options] { return run_merge(*options); }};
}

}  // namespace safetensors::cli
