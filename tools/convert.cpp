// `safetensors convert`: PyTorch and numpy checkpoints to safetensors, without running code.
#include <fmt/core.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "cli_common.hpp"
#include "safetensors/convert.hpp"
#include "safetensors/error.hpp"

namespace safetensors::cli {
namespace {

namespace fs = std::filesystem;

// Smaller inputs convert in well under a second; a bar would only flicker.
constexpr std::uint64_t progress_threshold = std::uint64_t{64} << 20;

struct ConvertCliOptions {
  std::string input;
  std::string output;
  std::string key;
  bool json = false;
};

std::uint64_t input_size(const fs::path& input) {
  std::error_code ec;
  if (!fs::is_directory(input, ec)) {
    const auto size = fs::file_size(input, ec);
    return ec ? 0 : size;
  }
  std::uint64_t total = 0;
  for (const auto& entry : fs::directory_iterator(input, ec)) {
    if (entry.path().extension() == ".bin" && entry.is_regular_file(ec)) {
      total += entry.file_size(ec);
    }
  }
  return total;
}

// Redraws one stderr line at most every 100 ms (and at the end).
class ProgressBar {
 public:
  void update(std::uint64_t done, std::uint64_t total) {
    const auto now = std::chrono::steady_clock::now();
    if (done < total && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const unsigned percent = total ? static_cast<unsigned>(done * 100 / total) : 100;
    const unsigned filled = percent * 30 / 100;
    fmt::print(stderr, "\rconverting and verifying [{}{}] {:3}% {} / {}", std::string(filled, '#'),
               std::string(30 - filled, ' '), percent, human_size(done), human_size(total));
    std::fflush(stderr);
    drawn_ = true;
  }
  ~ProgressBar() {
    if (drawn_) fmt::print(stderr, "\n");
  }

 private:
  std::chrono::steady_clock::time_point last_{};
  bool drawn_ = false;
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
  std::unique_ptr<ProgressBar> bar;
  if (::isatty(STDERR_FILENO) && input_size(input) > progress_threshold) {
    bar = std::make_unique<ProgressBar>();
    convert.progress = [&bar](std::uint64_t done, std::uint64_t total) {
      bar->update(done, total);
    };
  }
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
  bar.reset();
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
      "Convert a PyTorch checkpoint (zip or legacy format, .bin/.pt/.pth/.ckpt) or a numpy "
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
  app->add_flag("--json", options->json, "Print the report as JSON");
  return {app, [options] { return run_convert(*options); }};
}

}  // namespace safetensors::cli
