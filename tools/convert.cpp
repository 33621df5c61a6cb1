// `safetensors convert`: PyTorch and numpy checkpoints to safetensors, without running code.
#include <fmt/core.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "cli_common.hpp"
#include "progress.hpp"
#include "safetensors/convert.hpp"
#include "safetensors/error.hpp"

namespace safetensors::cli {
namespace {

namespace fs = std::filesystem;

struct ConvertCliOptions {
  std::string input;
  std::string output;
  std::string key;
  bool json = false;
};

void print_json(const ConvertReport& report) {
  std::string out = "{\n  \"input_format\": " + json_string(report.input_format);
  out += ",\n  \"outputs\": [";
  for (std::size_t i = 0; i < report.outputs.size(); ++i) {
    out += (i ? ", " : "") + json_string(report.outputs[i].string());
  }
  out += "],\n  \"converted\": [";
  for (std::size_t i = 0; i < report.tensors.size(); ++i) {
    out += (i ? ", " : "") + json_string(report.tensors[i]);
  }
  out += "],\n  \"deduplicated\": {";
  for (std::size_t i = 0; i < report.deduplicated.size(); ++i) {
    const auto& [removed, kept] = report.deduplicated[i];
    out += (i ? ", " : "") + json_string(removed) + ": " + json_string(kept);
  }
  out += "},\n  \"dropped\": [";
  for (std::size_t i = 0; i < report.dropped.size(); ++i) {
    out += (i ? ", " : "") + json_string(report.dropped[i]);
  }
  out += "],\n  \"bytes\": " + std::to_string(report.bytes_written) + "\n}\n";
  fmt::print("{}", out);
}

void print_text(const ConvertReport& report) {
  std::string outputs;
  for (const fs::path& path : report.outputs) {
    outputs += (outputs.empty() ? "" : ", ") + printable(path.string());
  }
  fmt::print("Converted {} tensors ({}) from {} to {}\n", report.tensors.size(),
             human_size(report.bytes_written), report.input_format, outputs);
  for (const auto& [removed, kept] : report.deduplicated) {
    fmt::print("  shared: {} -> {} (recorded in the metadata)\n", printable(removed),
               printable(kept));
  }
  for (const std::string& note : report.dropped) fmt::print("  dropped: {}\n", printable(note));
}

int run_convert(const ConvertCliOptions& options) {
  const fs::path input = options.input;
  ConvertOptions convert;
  convert.state_dict_key = options.key;
  Progress progress("converting and verifying", 0);
  if (progress.shown()) convert.progress = progress.callback();
  ConvertReport report;
  if (fs::is_directory(input)) {
    if (!options.output.empty()) {
      throw Error(ErrorCode::invalid_argument,
                  "a directory is converted in place; give no OUT for " + input.string());
    }
    report = convert_directory(input, convert);
  } else {
    fs::path output = options.output;
    if (output.empty()) output = fs::path(input).replace_extension(".safetensors");
    std::error_code ec;
    if (fs::equivalent(input, output, ec)) {
      throw Error(ErrorCode::invalid_argument,
                  "the output " + output.string() + " would replace the input");
    }
    report = convert_file(input, output, convert);
  }
  progress.clear();
  if (options.json) {
    print_json(report);
  } else {
    print_text(report);
  }
  return 0;
}

}  // namespace

Command add_convert(CLI::App& parent) {
  auto options = std::make_shared<ConvertCliOptions>();
  CLI::App* app = parent.add_subcommand(
      "convert",
      "Convert PyTorch and numpy checkpoints to safetensors\n\n"
      "Converts a PyTorch checkpoint (zip or legacy format, .bin/.pt/.pth/.ckpt) or a numpy "
      ".npy/.npz file to safetensors without running any code from it. IN may be a model "
      "directory: pytorch_model.bin becomes model.safetensors, a sharded set with "
      "pytorch_model.bin.index.json becomes model-*.safetensors shards and "
      "model.safetensors.index.json. Shared (tied) tensors are stored once and recorded in the "
      "metadata; the output is verified against the input before it appears.");
  app->add_option("IN", options->input, "Checkpoint file or model directory")->required();
  app->add_option("OUT", options->output,
                  "Output file (default: IN with the extension replaced by .safetensors)");
  app->add_option("--key", options->key,
                  "Key of the weights in a training checkpoint (default: state_dict when "
                  "present, else the top level)");
  app->add_flag("--json", options->json,
                "Print the report as JSON: input_format, outputs, converted (tensor names), "
                "deduplicated (removed: kept), dropped, bytes");
  return {app, [options] { return run_convert(*options); }};
}

}  // namespace safetensors::cli
