// Opening a checkpoint: a single file, or an index and its shards checked against each other.
#include "safetensors/checkpoint.hpp"

#include <algorithm>
#include <map>
#include <memory>

#include "checkpoint/index.hpp"
#include "error/messages.hpp"
#include "io/posix.hpp"
#include "safetensors/error.hpp"

namespace safetensors {
namespace {

namespace fs = std::filesystem;
using detail::quote;

// At most this many names are listed when a directory holds the wrong files.
constexpr std::size_t max_listed = 10;

constexpr std::string_view safetensors_suffix = ".safetensors";
constexpr std::string_view index_suffix = ".safetensors.index.json";

// Every shard tensor with the shard it came from, sorted by name.
struct ShardTensor {
  std::string_view name;
  std::size_t file;
  const TensorInfo* info;
};

// What `Checkpoint::open` fills its members from.
struct Parts {
  std::vector<File> files;
  std::vector<ShardTensor> tensors;
  std::optional<Metadata> metadata;
  std::optional<std::uint64_t> declared_total_size;
  fs::path index_path;
};

[[noreturn]] void invalid(const fs::path& origin, std::string_view message) {
  detail::fail(ErrorCode::invalid_index, origin.native(), message);
}

std::vector<ShardTensor> sorted_tensors(const std::vector<File>& files) {
  std::vector<ShardTensor> out;
  for (std::size_t f = 0; f < files.size(); ++f) {
    for (const TensorInfo& info : files[f].tensors()) out.push_back({info.name, f, &info});
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const ShardTensor& a, const ShardTensor& b) { return a.name < b.name; });
  return out;
}

Parts open_single(const fs::path& path, Backend backend) {
  Parts parts;
  parts.files.push_back(File::open(path, backend));
  parts.tensors = sorted_tensors(parts.files);
  return parts;
}

// Opens every distinct shard once, in the order of their names; `shard_of` maps each name
// the index uses to its position in `files`.
class ShardSet {
 public:
  ShardSet(const fs::path& index, Backend backend) : index_(index), backend_(backend) {
    dir_ = index.parent_path().empty() ? fs::path(".") : index.parent_path();
    std::error_code ec;
    canonical_dir_ = fs::canonical(dir_, ec);
    if (ec)
      detail::throw_os_error(dir_.native(), "cannot resolve the index's directory", ec.value());
  }

  void add(const std::string& name) {
    if (shard_of.count(name)) return;
    if (std::string problem = detail::shard_name_problem(name); !problem.empty()) {
      invalid(index_, "shard name " + quote(name) + " " + problem);
    }
    const fs::path path = dir_ / name;
    std::error_code ec;
    const fs::path canonical = fs::canonical(path, ec);
    if (ec) {
      invalid(index_, "shard " + quote(name) + " does not exist or cannot be resolved (" +
                          path.native() + ": " + ec.message() + ")");
    }
    // A symbolic link may still point elsewhere, so the resolved path decides.
    const auto [dir_end, path_it] = std::mismatch(canonical_dir_.begin(), canonical_dir_.end(),
                                                  canonical.begin(), canonical.end());
    if (dir_end != canonical_dir_.end() || path_it == canonical.end()) {
      invalid(index_, "shard name " + quote(name) + " leaves the directory: it resolves to " +
                          canonical.native() + ", outside " + canonical_dir_.native());
    }
    // Two spellings of one file ("a", "./a") are one shard.
    auto [it, inserted] = by_canonical_.emplace(canonical.native(), files.size());
    if (inserted) {
      try {
        files.push_back(File::open(path, backend_));
      } catch (const Error& e) {
        throw Error(e.code(), index_.native() + ": shard " + quote(name) + ": " + e.what());
      }
      names.push_back(name);
    }
    shard_of.emplace(name, it->second);
  }

  std::vector<File> files;
  std::vector<std::string> names;  // how the index first spells each file
  std::map<std::string, std::size_t, std::less<>> shard_of;

 private:
  fs::path index_;
  Backend backend_;
  fs::path dir_;
  fs::path canonical_dir_;
  std::map<std::string, std::size_t> by_canonical_;
};

const ShardTensor* find_tensor(const std::vector<ShardTensor>& tensors, std::string_view name) {
  const auto it =
      std::lower_bound(tensors.begin(), tensors.end(), name,
                       [](const ShardTensor& t, std::string_view key) { return t.name < key; });
  return it != tensors.end() && it->name == name ? &*it : nullptr;
}

// The index and its shards must describe the same tensors, each exactly once.
void check_agreement(const fs::path& index, const detail::CheckpointIndex& parsed,
                     const ShardSet& shards, const std::vector<ShardTensor>& tensors) {
  const auto shard = [&](std::size_t f) { return quote(shards.names[f]); };
  const auto twice = std::adjacent_find(
      tensors.begin(), tensors.end(),
      [](const ShardTensor& a, const ShardTensor& b) { return a.name == b.name; });
  if (twice != tensors.end()) {
    invalid(index, "tensor " + quote(twice->name) + " is in both " + shard(twice->file) + " and " +
                       shard(std::next(twice)->file));
  }
  for (const auto& [name, shard_name] : parsed.weight_map) {
    const std::size_t mapped = shards.shard_of.find(shard_name)->second;
    const ShardTensor* found = find_tensor(tensors, name);
    if (!found) {
      invalid(index, "tensor " + quote(name) + " is mapped to " + quote(shard_name) +
                         " but no shard has it");
    }
    if (found->file != mapped) {
      invalid(index, "tensor " + quote(name) + " is mapped to " + quote(shard_name) + " but only " +
                         shard(found->file) + " has it");
    }
  }
  for (const ShardTensor& t : tensors) {
    const auto it = std::lower_bound(parsed.weight_map.begin(), parsed.weight_map.end(), t.name,
                                     [](const auto& entry, std::string_view key) {
                                       return std::string_view(entry.first) < key;
                                     });
    if (it == parsed.weight_map.end() || it->first != t.name) {
      invalid(index, "tensor " + quote(t.name) + " is in shard " + shard(t.file) +
                         " but the index does not map it");
    }
  }
  // `total_size` is not checked against the tensors: writers disagree on what it counts
  // (mlx-lm sums the shards' file sizes, headers included; scripts that drop tensors leave it
  // as it was) and no loader uses it. Checkpoint::declared_total_size keeps it as written.
}

Parts open_index(const fs::path& index, Backend backend) {
  const detail::CheckpointIndex parsed =
      detail::parse_checkpoint_index(detail::read_checkpoint_index(index.native()), index.native());
  // Name order of the shards is file order for transformers' zero-padded numbering.
  std::vector<std::string> shard_names;
  for (const auto& entry : parsed.weight_map) shard_names.push_back(entry.second);
  std::sort(shard_names.begin(), shard_names.end());
  shard_names.erase(std::unique(shard_names.begin(), shard_names.end()), shard_names.end());
  ShardSet shards(index, backend);
  for (const std::string& name : shard_names) shards.add(name);

  Parts parts;
  parts.tensors = sorted_tensors(shards.files);
  check_agreement(index, parsed, shards, parts.tensors);
  parts.files = std::move(shards.files);
  parts.metadata = parsed.metadata;
  parts.declared_total_size = parsed.total_size;
  parts.index_path = index;
  return parts;
}

std::string listing(std::vector<std::string> names) {
  std::sort(names.begin(), names.end());
  std::string out;
  for (std::size_t i = 0; i < names.size() && i < max_listed; ++i) {
    out += (i ? ", " : "") + quote(names[i]);
  }
  if (names.size() > max_listed) {
    out += " and " + std::to_string(names.size() - max_listed) + " more";
  }
  return out;
}

Parts open_directory(const fs::path& dir, Backend backend) {
  const fs::path index = dir / index_file_name;
  std::error_code ec;
  if (fs::exists(index, ec)) return open_index(index, backend);
  std::vector<std::string> files, indexes, others;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().native();
    std::error_code type_ec;
    if (!it->is_regular_file(type_ec)) {
      others.push_back(name);
    } else if (name.ends_with(safetensors_suffix) && name.front() != '.') {
      files.push_back(name);
    } else if (name.ends_with(index_suffix)) {
      indexes.push_back(name);  // e.g. diffusers' diffusion_pytorch_model.safetensors.index.json
    } else {
      others.push_back(name);
    }
  }
  if (ec) detail::throw_os_error(dir.native(), "cannot list the directory", ec.value());
  if (indexes.size() == 1) return open_index(dir / indexes.front(), backend);
  if (indexes.empty() && files.size() == 1) return open_single(dir / files.front(), backend);
  std::string found;
  if (!indexes.empty()) {
    found = std::to_string(indexes.size()) + " indexes (" + listing(indexes) + "); pass one";
  } else if (!files.empty()) {
    found = std::to_string(files.size()) + " *.safetensors files (" + listing(files) +
            ") but no index to join them";
  } else if (!others.empty()) {
    found = "no *.safetensors file, only " + listing(others);
  } else {
    found = "nothing: the directory is empty";
  }
  invalid(dir, "no " + std::string(index_file_name) + "; found " + found);
}

Parts open_parts(const fs::path& path, Backend backend) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return open_directory(path, backend);
  if (path.extension() == ".json") return open_index(path, backend);
  return open_single(path, backend);
}

}  // namespace

Checkpoint Checkpoint::open(const std::filesystem::path& path, Backend backend) {
  Parts parts = open_parts(path, backend);
  Checkpoint checkpoint;
  checkpoint.files_ = std::move(parts.files);
  checkpoint.tensors_.reserve(parts.tensors.size());
  for (const ShardTensor& t : parts.tensors) {
    checkpoint.tensors_.push_back({&checkpoint.files_[t.file], t.info});
    checkpoint.total_bytes_ += t.info->byte_count();
  }
  checkpoint.metadata_ = std::move(parts.metadata);
  checkpoint.declared_total_size_ = parts.declared_total_size;
  checkpoint.index_path_ = std::move(parts.index_path);
  return checkpoint;
}

Checkpoint::Checkpoint(const Checkpoint& other)
    : files_(other.files_),
      tensors_(other.tensors_),
      metadata_(other.metadata_),
      total_bytes_(other.total_bytes_),
      declared_total_size_(other.declared_total_size_),
      index_path_(other.index_path_) {
  // The copied entries still point at `other`'s files; the infos live in shared state.
  for (CheckpointTensor& t : tensors_) t.file = &files_[t.file - other.files_.data()];
}

Checkpoint& Checkpoint::operator=(const Checkpoint& other) {
  if (this != &other) *this = Checkpoint(other);
  return *this;
}

const CheckpointTensor* Checkpoint::find(std::string_view name) const noexcept {
  const auto it = std::lower_bound(
      tensors_.begin(), tensors_.end(), name,
      [](const CheckpointTensor& t, std::string_view key) { return t.info->name < key; });
  return it != tensors_.end() && it->info->name == name ? &*it : nullptr;
}

}  // namespace safetensors
