// `safetensors cast`: a copy of a checkpoint with its floating-point tensors converted,
// streamed chunk by chunk so that memory use does not depend on the file size.
#include <fmt/core.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "progress.hpp"
#include "safetensors/safetensors.hpp"

namespace safetensors::cli {
namespace {

namespace fs = std::filesystem;

struct CastCliOptions {
  std::string input;
  std::string output;
  std::string dtype;
  bool json = false;
};

// Streams one tensor's bytes in the target dtype. The writer asks for chunks in increasing
// order; a chunk need not end on an element boundary, so whole elements around it are
// converted and the requested bytes cut out.
class CastProducer {
 public:
  CastProducer(const File& file, const TensorInfo& info, Dtype to)
      : file_(&file), info_(&info), to_(to) {}

  void operator()(std::uint64_t offset, std::span<std::byte> out) {
    const std::uint64_t start = file_->header().data_start + info_->data_begin;
    if (to_ == info_->dtype) return file_->source().read_at(start + offset, out);
    const std::uint64_t in_width = dtype_bits(info_->dtype) / 8;
    const std::uint64_t out_width = dtype_bits(to_) / 8;
    const std::uint64_t first = offset / out_width;
    const std::uint64_t last = (offset + out.size() + out_width - 1) / out_width;
    const std::size_t count = static_cast<std::size_t>(last - first);
    input_.resize(count * in_width);
    converted_.resize(count * out_width);
    file_->source().read_at(start + first * in_width, input_);
    cast(info_->dtype, input_, to_, converted_);
    std::copy_n(converted_.begin() + static_cast<std::ptrdiff_t>(offset - first * out_width),
                out.size(), out.begin());
  }

 private:
  const File* file_;
  const TensorInfo* info_;
  Dtype to_;
  std::vector<std::byte> input_;
  std::vector<std::byte> converted_;
};

int run_cast(const CastCliOptions& options) {
  const Dtype to = parse_cast_dtype(options.dtype);
  const Checkpoint input = Checkpoint::open(options.input);
  std::error_code ec;
  if (fs::equivalent(options.input, options.output, ec)) {
    throw Error(ErrorCode::invalid_argument,
                "the output " + options.output + " would replace the input");
  }
  for (const File& file : input.files()) {
    if (fs::equivalent(file.name(), options.output, ec)) {
      throw Error(ErrorCode::invalid_argument,
                  "the output " + options.output + " would replace the shard " + file.name());
    }
  }

  std::vector<TensorData> tensors;
  std::size_t converted = 0;
  std::uint64_t bytes_in = 0, bytes_out = 0;
  for (const CheckpointTensor& tensor : input.tensors()) {
    const TensorInfo& info = *tensor.info;
    const Dtype out = can_cast(info.dtype, to) ? to : info.dtype;
    if (out != info.dtype) ++converted;
    bytes_in += info.byte_count();
    bytes_out +=
        out == info.dtype ? info.byte_count() : info.element_count() * (dtype_bits(out) / 8);
    tensors.push_back(TensorData::from_producer(
        info.name, out, info.shape,
        [producer = std::make_shared<CastProducer>(*tensor.file, info, out)](
            std::uint64_t offset, std::span<std::byte> chunk) { (*producer)(offset, chunk); }));
  }
  WriteOptions write;
  if (input.metadata()) write.borrowed_metadata = &*input.metadata();
  TrackedWrite tracked("casting", tensors, bytes_out);
  write_file(options.output, tracked.tensors(), write);
  tracked.finish();
  if (options.json) {
    fmt::print("{}\n", JsonObject()
                           .text("output", options.output)
                           .text("dtype", dtype_name(to))
                           .number("tensors", std::uint64_t{tensors.size()})
                           .number("converted", std::uint64_t{converted})
                           .number("bytes_in", bytes_in)
                           .number("bytes_out", bytes_out)
                           .str());
  } else {
    fmt::print("{}: {} tensors, {} converted to {}, {} -> {}\n", printable(options.output),
               tensors.size(), converted, dtype_name(to), human_size(bytes_in),
               human_size(bytes_out));
  }
  return 0;
}

}  // namespace

Dtype parse_cast_dtype(std::string_view text) {
  static const std::map<std::string, Dtype, std::less<>> aliases = {{"FLOAT32", Dtype::F32},
                                                                    {"FLOAT", Dtype::F32},
                                                                    {"FLOAT16", Dtype::F16},
                                                                    {"HALF", Dtype::F16},
                                                                    {"BFLOAT16", Dtype::BF16}};
  std::string upper(text);
  std::transform(upper.begin(), upper.end(), upper.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  std::optional<Dtype> dtype = dtype_from_name(upper);
  if (const auto it = aliases.find(upper); !dtype && it != aliases.end()) dtype = it->second;
  if (!dtype || (*dtype != Dtype::F32 && *dtype != Dtype::F16 && *dtype != Dtype::BF16)) {
    throw Error(ErrorCode::invalid_argument,
                "cannot cast to '" + std::string(text) + "': the targets are f32, f16 and bf16");
  }
  return *dtype;
}

Command add_cast(CLI::App& parent) {
  auto options = std::make_shared<CastCliOptions>();
  CLI::App* app = parent.add_subcommand(
      "cast",
      "Copy a checkpoint with its float tensors cast to f32/f16/bf16\n\n"
      "Copies a checkpoint (file, directory or index) into one safetensors file with its F32, F16, "
      "BF16 and 8-bit float (F8_*) tensors converted to DTYPE, bit-identical to torch's "
      "tensor.to(dtype). Other tensors and the metadata are copied unchanged. The data is "
      "streamed, so any size fits in memory; OUT is written atomically.");
  app->add_option("IN", options->input, "Input file, checkpoint directory or index")->required();
  app->add_option("OUT", options->output, "Output safetensors file")->required();
  app->add_option("--dtype", options->dtype, "Target dtype: f32, f16 or bf16 (any case)")
      ->required()
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            try {
              parse_cast_dtype(text);
            } catch (const Error& e) {
              return e.what();
            }
            return {};
          },
          "DTYPE"));
  app->add_flag("--json", options->json,
                "Print the summary as JSON: output, dtype, tensors, converted, bytes_in, "
                "bytes_out");
  return {app, [options] { return run_cast(*options); }};
}

}  // namespace safetensors::cli
