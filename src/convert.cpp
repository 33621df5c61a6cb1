#include "safetensors/convert.hpp"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>

#include "checkpoint_index.hpp"
#include "convert_copy.hpp"
#include "convert_plan.hpp"
#include "header_text.hpp"
#include "safetensors/error.hpp"
#include "safetensors/file.hpp"
#include "safetensors/output.hpp"
#include "safetensors/writer.hpp"

namespace safetensors {
namespace {

using detail::ConvertItem;
using detail::ConvertPlan;

// Storages that a later tensor still needs are kept up to this many bytes (or the largest
// storage, if bigger); see StorageCache for the resulting peak.
constexpr std::uint64_t cache_budget = std::uint64_t{128} << 20;
constexpr std::uint64_t verify_chunk = std::uint64_t{8} << 20;

constexpr std::string_view pytorch_file = "pytorch_model.bin";
constexpr std::string_view pytorch_index = "pytorch_model.bin.index.json";
constexpr std::string_view safetensors_file = "model.safetensors";
constexpr std::string_view safetensors_index = "model.safetensors.index.json";

struct Progress {
  const ConvertOptions& options;
  std::uint64_t total = 0;
  std::uint64_t done = 0;
  void add(std::uint64_t bytes) {
    done += bytes;
    if (options.progress) options.progress(done, total);
  }
};

[[noreturn]] void mismatch(const std::filesystem::path& output, const std::string& what) {
  detail::fail(ErrorCode::invalid_checkpoint, output.string(),
               "verification after writing failed: " + what);
}

// Reopens the written file and compares its header with the plan and every tensor's bytes
// with the source storages, each storage read once more. Strided tensors are checked
// element by element with index arithmetic of their own, so a mistake in `gather` shows.
void verify(const std::filesystem::path& temp, const std::filesystem::path& output,
            const ConvertPlan& plan, Progress& progress) {
  const File file = File::open(temp, Backend::pread);
  if (file.size() != plan.items.size()) {
    mismatch(output, std::to_string(file.size()) + " tensors instead of " +
                         std::to_string(plan.items.size()));
  }
  if (file.metadata() != std::optional<Metadata>(plan.metadata)) {
    mismatch(output, "the metadata differs");
  }
  std::map<std::string, std::vector<const ConvertItem*>> by_storage;
  for (const ConvertItem& item : plan.items) by_storage[item.storage].push_back(&item);
  std::vector<std::byte> chunk;
  const Source& source = file.source();
  for (const auto& [key, items] : by_storage) {
    std::vector<std::byte> storage;
    bool loaded = false;
    for (const ConvertItem* item : items) {
      const TensorInfo& info = file.info(item->name);
      if (info.dtype != item->dtype || info.shape != item->shape ||
          info.byte_count() != item->bytes) {
        mismatch(output, "tensor " + detail::quote(item->name) + " has another dtype or shape");
      }
      if (item->bytes == 0) continue;
      if (!loaded) {
        storage = plan.load(key);
        loaded = true;
      }
      const std::uint64_t el = detail::element_size(item->dtype);
      for (std::uint64_t off = 0; off < item->bytes; off += chunk.size()) {
        chunk.resize(std::min(verify_chunk, item->bytes - off));
        source.read_at(file.header().data_start + info.data_begin + off, chunk);
        bool same = true;
        if (item->contiguous) {
          same = std::memcmp(chunk.data(), storage.data() + item->offset * el + off,
                             chunk.size()) == 0;
        } else {
          // Chunks hold whole elements: verify_chunk is a multiple of every element size.
          for (std::uint64_t i = 0; same && i < chunk.size() / el; ++i) {
            const std::uint64_t at = detail::element_position(*item, off / el + i) * el;
            same = std::memcmp(chunk.data() + i * el, storage.data() + at, el) == 0;
          }
        }
        if (!same) {
          mismatch(output, "tensor " + detail::quote(item->name) + " differs from the source");
        }
        progress.add(chunk.size());
      }
    }
  }
}

// The writer's order: the order producers run in, hence the order storages are needed.
std::vector<std::size_t> write_order(const std::vector<TensorData>& tensors) {
  return plan_write(tensors).order;
}

std::uint64_t write_and_verify(const ConvertPlan& plan, const std::filesystem::path& output,
                               const ConvertOptions& options) {
  std::vector<TensorData> tensors;
  tensors.reserve(plan.items.size());
  std::uint64_t largest = 0;
  for (const ConvertItem& item : plan.items) {
    // A placeholder producer until the write order, which the real ones depend on, is known.
    tensors.push_back(TensorData::from_producer(item.name, item.dtype, item.shape,
                                                [](std::uint64_t, std::span<std::byte>) {}));
    largest = std::max(largest, plan.storage_bytes.at(item.storage));
  }
  const std::vector<std::size_t> order = write_order(tensors);
  // One use per written tensor that has bytes (the writer never calls empty producers).
  std::vector<std::string> uses;
  std::vector<std::size_t> use_of(plan.items.size(), 0);
  for (std::size_t i : order) {
    if (plan.items[i].bytes == 0) continue;
    use_of[i] = uses.size();
    uses.push_back(plan.items[i].storage);
  }
  detail::StorageCache cache(plan.load, std::move(uses), plan.storage_bytes,
                             std::max(cache_budget, largest));
  for (std::size_t i = 0; i < plan.items.size(); ++i) {
    const ConvertItem* item = &plan.items[i];
    const std::size_t use = use_of[i];
    tensors[i].producer = [item, use, &cache](std::uint64_t offset, std::span<std::byte> out) {
      detail::gather(*item, cache.acquire(use), offset, out);
      if (offset + out.size() == item->bytes) cache.release(use);
    };
  }
  WriteOptions write_options;
  write_options.metadata = plan.metadata;
  const std::uint64_t file_size = plan_write(tensors, write_options).file_size();
  Progress progress{options, file_size, 0};
  for (const ConvertItem& item : plan.items) progress.total += item.bytes;

  AtomicFile file(output);
  write_to_sink(tensors, write_options, [&](std::span<const std::byte> chunk) {
    file.write(chunk);
    progress.add(chunk.size());
  });
  verify(file.temp_path(), output, plan, progress);
  file.commit();
  return file_size;
}

std::string stem_of(const std::filesystem::path& input) {
  return input.stem().string();
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) detail::fail(ErrorCode::io, path.string(), "cannot open the file");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) detail::fail(ErrorCode::io, path.string(), "cannot read the file");
  return text.str();
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
  const detail::CheckpointIndex index =
      detail::parse_checkpoint_index(read_text(index_path), index_path.string());
  std::map<std::string, std::string> shards;  // source shard -> output shard
  std::set<std::string> outputs;
  for (const auto& [tensor, shard] : index.weight_map) {
    if (shards.count(shard)) continue;
    if (const std::string problem = detail::shard_name_problem(shard); !problem.empty()) {
      detail::fail(ErrorCode::invalid_checkpoint, index_path.string(),
                   "shard " + detail::quote(shard) + ": " + problem);
    }
    const std::string out = output_shard_name(shard);
    if (!outputs.insert(out).second || out == safetensors_index) {
      detail::fail(ErrorCode::invalid_checkpoint, index_path.string(),
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
        detail::fail(ErrorCode::invalid_checkpoint, index_path.string(),
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
      detail::fail(ErrorCode::invalid_checkpoint, index_path.string(),
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
  // Positional reads keep the process's resident memory to what we hold, not the file.
  const std::unique_ptr<Source> source = open_pread_source(input);
  const ConvertPlan plan = detail::plan_conversion(*source, stem_of(input), options.state_dict_key);
  ConvertReport report;
  report.input_format = plan.input_format;
  report.bytes_written = write_and_verify(plan, output, options);
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
