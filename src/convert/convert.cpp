#include "safetensors/convert.hpp"

#include <algorithm>
#include <map>
#include <set>

#include "checkpoint/index.hpp"
#include "convert/plan.hpp"
#include "convert/write.hpp"
#include "error/messages.hpp"
#include "safetensors/atomic_file.hpp"
#include "safetensors/error.hpp"
#include "safetensors/file.hpp"

namespace safetensors {
namespace {

using detail::ConvertItem;
using detail::ConvertPlan;

constexpr std::string_view pytorch_file = "pytorch_model.bin";
constexpr std::string_view pytorch_index = "pytorch_model.bin.index.json";
constexpr std::string_view safetensors_file = "model.safetensors";
constexpr std::string_view safetensors_index = "model.safetensors.index.json";

std::string stem_of(const std::filesystem::path& input) {
  return input.stem().string();
}

// "pytorch_model-00001-of-00002.bin" -> "model-00001-of-00002.safetensors", as transformers
// names the shards it writes; any other "x.bin" becomes "x.safetensors" beside it.
std::string output_shard_name(const std::string& shard) {
  std::string name = shard;
  if (name.ends_with(".bin")) name.resize(name.size() - 4);
  const std::size_t slash = name.rfind('/');
  const std::size_t base = slash == std::string::npos ? 0 : slash + 1;
  const std::string_view prefix = "pytorch_model";
  if (name.compare(base, prefix.size(), prefix) == 0) name.replace(base, prefix.size(), "model");
  return name + ".safetensors";
}

// Removes the files a failed directory conversion already committed.
class Cleanup {
 public:
  ~Cleanup() {
    if (done_) return;
    for (const auto& path : paths_) {
      std::error_code ignored;
      std::filesystem::remove(path, ignored);
    }
  }
  void add(const std::filesystem::path& path) { paths_.push_back(path); }
  void finish() { done_ = true; }

 private:
  std::vector<std::filesystem::path> paths_;
  bool done_ = false;
};

ConvertReport convert_sharded(const std::filesystem::path& directory,
                              const ConvertOptions& options) {
  const std::filesystem::path index_path = directory / pytorch_index;
  const detail::CheckpointIndex index = detail::parse_checkpoint_index(
      detail::read_checkpoint_index(index_path.native()), index_path.string());
  std::map<std::string, std::string> shards;  // source shard -> output shard
  std::set<std::string> outputs;
  for (const auto& [tensor, shard] : index.weight_map) {
    if (shards.count(shard)) continue;
    if (const std::string problem = detail::shard_name_problem(shard); !problem.empty()) {
      detail::fail(ErrorCode::invalid_index, index_path.string(),
                   "shard " + detail::quote(shard) + ": " + problem);
    }
    const std::string out = output_shard_name(shard);
    if (!outputs.insert(out).second || out == safetensors_index) {
      detail::fail(ErrorCode::invalid_index, index_path.string(),
                   "shard " + detail::quote(shard) + " would be written over another output");
    }
    shards.emplace(shard, out);
  }

  ConvertReport report;
  report.input_format = "torch-sharded";
  Cleanup cleanup;
  std::map<std::string, std::string> written;            // tensor -> output shard
  std::map<std::string, std::set<std::string>> present;  // source shard -> names it had
  std::uint64_t total_size = 0;
  for (const auto& [shard, out] : shards) {
    const std::filesystem::path target = directory / out;
    ConvertReport part = convert_file(directory / shard, target, options);
    cleanup.add(target);
    report.outputs.push_back(target);
    report.bytes_written += part.bytes_written;
    total_size += File::open(target, Backend::pread).header().data_size;
    for (const std::string& name : part.tensors) {
      if (!written.emplace(name, out).second) {
        detail::fail(ErrorCode::invalid_index, index_path.string(),
                     "tensor " + detail::quote(name) + " is in more than one shard");
      }
      present[shard].insert(name);
    }
    for (const auto& [removed, kept] : part.deduplicated) present[shard].insert(removed);
    report.deduplicated.insert(report.deduplicated.end(), part.deduplicated.begin(),
                               part.deduplicated.end());
    for (const std::string& note : part.dropped) report.dropped.push_back(shard + ": " + note);
  }
  for (const auto& [tensor, shard] : index.weight_map) {
    if (!present[shard].count(tensor)) {
      detail::fail(ErrorCode::invalid_index, index_path.string(),
                   "tensor " + detail::quote(tensor) + " is mapped to shard " +
                       detail::quote(shard) + ", which does not hold it");
    }
  }
  const std::vector<std::pair<std::string, std::string>> weight_map(written.begin(), written.end());
  const std::string json = detail::checkpoint_index_json(weight_map, total_size, index.metadata);
  const std::filesystem::path index_out = directory / safetensors_index;
  AtomicFile file(index_out);
  file.write(std::as_bytes(std::span(json)));
  file.commit();
  cleanup.add(index_out);
  cleanup.finish();
  report.outputs.push_back(index_out);
  report.bytes_written += json.size();
  for (const auto& [name, shard] : written) report.tensors.push_back(name);
  std::sort(report.deduplicated.begin(), report.deduplicated.end());
  return report;
}

}  // namespace

ConvertReport convert_file(const std::filesystem::path& input, const std::filesystem::path& output,
                           const ConvertOptions& options) {
  // Mapped, so stored records are written and checked without a copy; the converter gives
  // each storage's pages back after its last use, which keeps resident memory to what a
  // copy would hold.
  const std::unique_ptr<Source> source = open_mmap_source(input);
  const ConvertPlan plan = detail::plan_conversion(*source, stem_of(input), options.state_dict_key);
  ConvertReport report;
  report.input_format = plan.input_format;
  report.bytes_written = detail::write_verified(plan, output, options);
  report.outputs.push_back(output);
  for (const ConvertItem& item : plan.items) report.tensors.push_back(item.name);
  std::sort(report.tensors.begin(), report.tensors.end());
  report.deduplicated = plan.deduplicated;
  report.dropped = plan.dropped;
  return report;
}

ConvertReport convert_directory(const std::filesystem::path& directory,
                                const ConvertOptions& options) {
  if (std::filesystem::exists(directory / pytorch_index)) {
    return convert_sharded(directory, options);
  }
  if (std::filesystem::exists(directory / pytorch_file)) {
    return convert_file(directory / pytorch_file, directory / safetensors_file, options);
  }
  detail::fail(ErrorCode::invalid_argument, directory.string(),
               "the directory has neither " + std::string(pytorch_file) + " nor " +
                   std::string(pytorch_index));
}

}  // namespace safetensors
