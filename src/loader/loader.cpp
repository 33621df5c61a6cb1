// Loading checkpoints into one buffer: selection, layout, splitting into parallel work.
#include "safetensors/loader.hpp"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <new>
#include <set>
#include <thread>

#include "error/messages.hpp"
#include "io/memory.hpp"
#include "loader/parts.hpp"
#include "loader/run.hpp"
#include "safetensors/cast.hpp"
#include "safetensors/error.hpp"
#include "safetensors/parallel.hpp"

namespace safetensors {
namespace {

// Owned load buffers start at this alignment (tensors inside are packed; see plan_load).
constexpr std::uint64_t tensor_alignment = 64;

// Work is cut into pieces of at most this many source bytes, so one large tensor spreads
// over every thread; small tensors are grouped into items of about this size.
constexpr std::uint64_t max_piece = std::uint64_t{16} << 20;
constexpr std::uint64_t min_piece = std::uint64_t{1} << 20;

std::string origin(const Checkpoint& checkpoint) {
  if (!checkpoint.index_path().empty()) return checkpoint.index_path().string();
  if (!checkpoint.files().empty()) return checkpoint.files().front().name();
  return "checkpoint";
}

// `*` matches any run of characters (dots included), `?` exactly one.
bool glob_match(std::string_view pattern, std::string_view text) {
  std::size_t p = 0, t = 0;
  std::size_t star = std::string_view::npos, resume = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

Dtype output_dtype(Dtype stored, const std::optional<Dtype>& wanted) {
  return wanted && can_cast(stored, *wanted) ? *wanted : stored;
}

// Bytes of `shape` stored as `info`'s dtype and converted to `to`.
std::uint64_t converted_size(const TensorInfo& info, std::span<const std::uint64_t> shape,
                             Dtype to) {
  const std::uint64_t stored = byte_size(info.dtype, shape).bytes;
  if (to == info.dtype) return stored;
  return stored / (dtype_bits(info.dtype) / 8) * (dtype_bits(to) / 8);
}

// Checks that `tensor` is something this checkpoint can produce; returns its source.
const CheckpointTensor& source_of(const Checkpoint& checkpoint, const LoadedTensor& tensor,
                                  std::uint64_t buffer_size) {
  const CheckpointTensor* found = checkpoint.find(tensor.name);
  if (!found) {
    detail::fail(ErrorCode::tensor_not_found, origin(checkpoint),
                 "no tensor " + detail::quote(tensor.name) + " to load");
  }
  const TensorInfo& info = *found->info;
  const auto bad = [&](const std::string& why) {
    detail::fail(ErrorCode::invalid_argument, origin(checkpoint),
                 "cannot load tensor " + detail::quote(tensor.name) + ": " + why);
  };
  if (!can_cast(info.dtype, tensor.dtype)) {
    bad("it is stored as " + std::string(dtype_name(info.dtype)) + " and cannot become " +
        std::string(dtype_name(tensor.dtype)));
  }
  const std::vector<std::uint64_t> shape =
      tensor.slice ? detail::sliced_shape(origin(checkpoint), info, *tensor.slice) : info.shape;
  if (tensor.shape != shape) bad("the plan's shape differs from the stored one");
  if (tensor.byte_count != converted_size(info, shape, tensor.dtype)) {
    bad("the plan gives " + std::to_string(tensor.byte_count) + " bytes, it needs " +
        std::to_string(converted_size(info, shape, tensor.dtype)));
  }
  if (tensor.offset > buffer_size || tensor.byte_count > buffer_size - tensor.offset) {
    bad("bytes [" + std::to_string(tensor.offset) + ", " +
        std::to_string(tensor.offset + tensor.byte_count) + ") exceed the buffer of " +
        std::to_string(buffer_size) + " bytes");
  }
  return *found;
}

// Memory for load(): plain pages, faulted in ahead of the workers by run.cpp's prefaulter.
// Transparent huge pages were tried and dropped: in fresh processes on the development VM,
// which reports free memory to its host, a warm 498 MB copy=True load took 7.8x the time of
// torch.load with them and 0.47x without (bench/cold_load.py, row load_checkpoint(copy=True),
// 2026-12-05): a 2 MiB page comes from the free blocks the host has taken back, and faulting
// it in costs the host too.
std::shared_ptr<std::byte[]> allocate(std::uint64_t size) {
  constexpr std::align_val_t alignment{tensor_alignment};
  auto* raw = static_cast<std::byte*>(::operator new[](size, alignment));
  return {raw, [](std::byte* p) { ::operator delete[](p, std::align_val_t{tensor_alignment}); }};
}

unsigned thread_count(const LoadOptions& options) {
  if (options.threads != 0) return options.threads;
  return std::max(1u, std::thread::hardware_concurrency());
}

detail::LoadJob make_job(const Checkpoint& checkpoint, const LoadPlan& plan,
                         std::span<std::byte> buffer, const LoadOptions& options,
                         bool open_direct = false) {
  detail::LoadJob job;
  // `automatic` is pread. Measured with `safetensors bench` on a 475 MiB GPT-2-shaped F32
  // file (2-core VM, ext4; GB/s of file bytes, best of 5, 1 thread): warm, stored dtypes,
  // pread 11.4-13.2 vs mmap 8.9-10.3 (memcpy 9-12); warm, to BF16, pread 7.2 vs mmap 5.9;
  // cold, pread 2.8 vs mmap 0.6 (sequential read(2) 1.3-2.5). Copying from a mapping pays
  // for page-table work that pread does not, and cold page faults read ahead in small steps.
  // (load() maps instead where it can; see map_tensors.)
  const bool copies =
      options.method == LoadMethod::automatic || options.method == LoadMethod::mapped;
  job.method = copies ? LoadMethod::pread : options.method;
  job.threads = thread_count(options);
  job.progress = options.progress;
  job.destination = buffer.first(static_cast<std::size_t>(plan.buffer_size));

  std::vector<std::size_t> shard_of_file(checkpoint.files().size(), SIZE_MAX);
  std::uint64_t source_total = 0;
  struct Selected {
    const CheckpointTensor* source;
    const LoadedTensor* target;
  };
  std::vector<Selected> selected;
  selected.reserve(plan.tensors.size());
  for (const LoadedTensor& tensor : plan.tensors) {
    const CheckpointTensor& source = source_of(checkpoint, tensor, buffer.size());
    selected.push_back({&source, &tensor});
    source_total += byte_size(source.info->dtype, tensor.shape).bytes;
    job.total_bytes += tensor.byte_count;
  }
  // Only the part [keep_begin, keep_end) of the buffer is filled (LoadOptions::buffer_range).
  std::uint64_t keep_begin = 0, keep_end = buffer.size();
  if (options.buffer_range) {
    keep_begin = options.buffer_range->first;
    keep_end = std::min<std::uint64_t>(options.buffer_range->second, buffer.size());
    job.total_bytes = 0;
  }
  // Shards are opened once each; workers then walk the files in order, which keeps the
  // reads of neighbouring threads close together.
  const auto file_index = [&](const Selected& s) {
    return static_cast<std::size_t>(s.source->file - checkpoint.files().data());
  };
  for (const Selected& s : selected) {
    const std::size_t file = file_index(s);
    if (shard_of_file[file] != SIZE_MAX) continue;
    shard_of_file[file] = job.shards.size();
    job.shards.push_back(std::make_unique<detail::BulkReader>(
        s.source->file->source(), job.method == LoadMethod::direct || open_direct,
        job.method == LoadMethod::mmap));
  }
  std::sort(selected.begin(), selected.end(), [&](const Selected& a, const Selected& b) {
    const std::size_t fa = shard_of_file[file_index(a)];
    const std::size_t fb = shard_of_file[file_index(b)];
    return fa != fb ? fa < fb : a.source->info->data_begin < b.source->info->data_begin;
  });

  const std::uint64_t per_thread = source_total / (std::uint64_t{job.threads} * 4);
  const std::uint64_t piece_limit = std::clamp(per_thread, min_piece, max_piece);
  std::uint64_t item_bytes = 0;
  job.item_begin.push_back(0);
  for (const Selected& s : selected) {
    const TensorInfo& info = *s.source->info;
    const File& file = *s.source->file;
    const Dtype from = info.dtype, to = s.target->dtype;
    const std::uint64_t in_width = from == to ? 1 : dtype_bits(from) / 8;
    const std::uint64_t out_width = from == to ? 1 : dtype_bits(to) / 8;
    const std::uint64_t step = std::max(piece_limit / in_width, std::uint64_t{1}) * in_width;
    const std::uint64_t data = file.header().data_start + info.data_begin;
    const std::uint64_t tensor_begin = s.target->offset;
    const std::uint64_t tensor_end = tensor_begin + s.target->byte_count;
    if (options.buffer_range && (tensor_end <= keep_begin || tensor_begin >= keep_end)) continue;
    // The destination bytes of this tensor to fill, as source bytes (whole elements).
    const auto to_source = [&](std::uint64_t dest) {
      const std::uint64_t within = std::clamp(dest, tensor_begin, tensor_end) - tensor_begin;
      if (within % out_width != 0) {
        detail::fail(ErrorCode::invalid_argument, origin(checkpoint),
                     "the buffer range [" + std::to_string(keep_begin) + ", " +
                         std::to_string(keep_end) + ") cuts an element of tensor " +
                         detail::quote(s.target->name));
      }
      return within / out_width * in_width;
    };
    const std::uint64_t first = to_source(keep_begin);
    const std::uint64_t last = to_source(keep_end);
    if (options.buffer_range) job.total_bytes += (last - first) / in_width * out_width;
    // `at` counts source bytes of the part in destination order.
    std::uint64_t at = 0;
    const auto add_run = [&](std::uint64_t run_offset, std::uint64_t run_length) {
      std::uint64_t begin = std::max(at, first), end = std::min(at + run_length, last);
      for (; begin < end;) {
        const std::uint64_t n = std::min(step, end - begin);
        job.pieces.push_back({shard_of_file[file_index(s)], from, to,
                              data + run_offset + (begin - at), n,
                              buffer.data() + tensor_begin + begin / in_width * out_width,
                              n / in_width * out_width});
        item_bytes += n;
        begin += n;
        if (item_bytes >= piece_limit) {
          job.item_begin.push_back(job.pieces.size());
          item_bytes = 0;
        }
      }
      at += run_length;
    };
    if (s.target->slice) {
      detail::for_each_slice_run(info, *s.target->slice, add_run);
    } else {
      add_run(0, info.byte_count());
    }
  }
  if (job.item_begin.back() != job.pieces.size()) job.item_begin.push_back(job.pieces.size());
  return job;
}

// Whether load() can hand out the files' own pages: whole tensors as stored, every file a
// file, and (for `automatic`, where the caller did not ask for it) every tensor aligned to its
// element size where it lies, as in an owned buffer.
bool can_map(const Checkpoint& checkpoint, const LoadPlan& plan, const LoadOptions& options) {
  // Parts of tensors and parts of the buffer are copies by nature.
  if (options.buffer_range) return false;
  for (const LoadedTensor& tensor : plan.tensors) {
    const CheckpointTensor& source = *checkpoint.find(tensor.name);
    if (tensor.slice || source.info->dtype != tensor.dtype ||
        source.file->source().descriptor() < 0) {
      return false;
    }
    const std::uint64_t at = source.file->header().data_start + source.info->data_begin;
    const std::uint64_t width = std::max<std::uint64_t>(dtype_bits(tensor.dtype) / 8, 1);
    if (options.method == LoadMethod::automatic && at % width != 0) return false;
  }
  return true;
}

// LoadMethod::mapped: each file that holds a selected tensor mapped copy-on-write, and the
// selected tensors' pages read in on `threads` workers.
void map_tensors(const Checkpoint& checkpoint, const LoadPlan& plan, const LoadOptions& options,
                 std::vector<std::byte*>& data, std::vector<std::shared_ptr<const void>>& holds) {
  struct Mapped {
    std::shared_ptr<detail::Mapping> mapping;
    std::vector<std::span<const std::byte>> ranges;
  };
  std::map<const File*, Mapped> files;
  data.reserve(plan.tensors.size());
  for (const LoadedTensor& tensor : plan.tensors) {
    const CheckpointTensor& source = *checkpoint.find(tensor.name);
    Mapped& file = files[source.file];
    const Source& bytes = source.file->source();
    if (!file.mapping) {
      file.mapping = std::make_shared<detail::Mapping>(detail::map_file(
          bytes.descriptor(), bytes.size(), detail::MapKind::copy_on_write, bytes.name()));
      holds.push_back(file.mapping);
    }
    const std::uint64_t at = source.file->header().data_start + source.info->data_begin;
    const std::span<const std::byte> range =
        file.mapping->bytes().subspan(at, source.info->byte_count());
    file.ranges.push_back(range);
    data.push_back(const_cast<std::byte*>(range.data()));  // the mapping is writable
  }
  std::vector<std::span<const std::byte>> ranges;
  for (const auto& [file, mapped] : files) {
    ranges.insert(ranges.end(), mapped.ranges.begin(), mapped.ranges.end());
  }
  // In address order, so that neighbouring tensors read as one stream.
  std::sort(ranges.begin(), ranges.end(),
            [](const auto& a, const auto& b) { return a.data() < b.data(); });
  // Progress (and with it a caller's chance to stop, as Python's Ctrl-C) after each step the
  // calling thread reads. populate counts whole pages, a little more than the tensors' bytes,
  // so a count that reaches the plan's is left to the report of the end below (one report of
  // the total, and counts that only grow).
  std::function<void(std::uint64_t, std::uint64_t)> progress;
  if (options.progress) {
    progress = [&](std::uint64_t done, std::uint64_t) {
      if (done < plan.buffer_size) options.progress(done, plan.buffer_size);
    };
  }
  detail::populate(ranges, options.threads, origin(checkpoint), progress);
  if (options.progress) options.progress(plan.buffer_size, plan.buffer_size);
}

}  // namespace

LoadPlan plan_load(const Checkpoint& checkpoint, const LoadOptions& options) {
  std::map<std::string, TensorSlice, std::less<>> tp_slices;
  if (options.tensor_parallel) {
    tp_slices = plan_tensor_parallel(checkpoint, *options.tensor_parallel);
  }
  for (const auto& [name, slice] : options.slices) {
    if (!checkpoint.find(name)) {
      detail::fail(ErrorCode::tensor_not_found, origin(checkpoint),
                   "no tensor " + detail::quote(name) + " to load a part of");
    }
  }
  const auto slice_of = [&](std::string_view name) -> const TensorSlice* {
    if (const auto it = options.slices.find(name); it != options.slices.end()) return &it->second;
    if (const auto it = tp_slices.find(name); it != tp_slices.end()) return &it->second;
    return nullptr;
  };
  const std::set<std::string_view> names(options.names.begin(), options.names.end());
  for (std::string_view name : names) {
    if (!checkpoint.find(name)) {
      detail::fail(ErrorCode::tensor_not_found, origin(checkpoint),
                   "no tensor " + detail::quote(name) + " to load");
    }
  }
  const bool everything = names.empty() && options.pattern.empty();
  LoadPlan plan;
  plan.tensors.reserve(checkpoint.tensors().size());
  for (const CheckpointTensor& tensor : checkpoint.tensors()) {
    const TensorInfo& info = *tensor.info;
    // Names and pattern add up: a tensor is loaded when either selects it.
    const bool chosen = everything || names.contains(info.name) ||
                        (!options.pattern.empty() && glob_match(options.pattern, info.name));
    const TensorSlice* slice = slice_of(info.name);
    if (!chosen) {
      if (options.slices.contains(info.name)) {
        detail::fail(ErrorCode::invalid_argument, origin(checkpoint),
                     "a part of tensor " + detail::quote(info.name) +
                         " is asked for, but the selection leaves the tensor out");
      }
      continue;
    }
    LoadedTensor loaded;
    loaded.name = info.name;
    loaded.dtype = output_dtype(info.dtype, options.dtype);
    loaded.shape = slice ? detail::sliced_shape(origin(checkpoint), info, *slice) : info.shape;
    if (slice) loaded.slice = *slice;
    loaded.byte_count = converted_size(info, loaded.shape, loaded.dtype);
    plan.tensors.push_back(std::move(loaded));
  }
  // Widest elements first, as the writer lays out a file: every tensor's size is a multiple
  // of its element size, so each one starts aligned to its element without any padding and
  // the buffer holds exactly the tensors' bytes (on a 64-byte aligned base).
  std::vector<std::size_t> placement(plan.tensors.size());
  for (std::size_t i = 0; i < placement.size(); ++i) placement[i] = i;
  std::stable_sort(placement.begin(), placement.end(), [&](std::size_t a, std::size_t b) {
    return dtype_bits(plan.tensors[a].dtype) > dtype_bits(plan.tensors[b].dtype);
  });
  for (std::size_t i : placement) {
    plan.tensors[i].offset = plan.buffer_size;
    plan.buffer_size += plan.tensors[i].byte_count;
  }
  return plan;
}

void load_into(const Checkpoint& checkpoint, const LoadPlan& plan, std::span<std::byte> buffer,
               const LoadOptions& options) {
  if (buffer.size() < plan.buffer_size) {
    detail::fail(ErrorCode::invalid_argument, origin(checkpoint),
                 "the load buffer holds " + std::to_string(buffer.size()) +
                     " bytes, the plan needs " + std::to_string(plan.buffer_size));
  }
  if (options.buffer_range && (options.buffer_range->first > options.buffer_range->second ||
                               options.buffer_range->second > plan.buffer_size)) {
    detail::fail(ErrorCode::invalid_argument, origin(checkpoint),
                 "the buffer range [" + std::to_string(options.buffer_range->first) + ", " +
                     std::to_string(options.buffer_range->second) +
                     ") is not a range of the plan's " + std::to_string(plan.buffer_size) +
                     " bytes");
  }
  detail::run_load(make_job(checkpoint, plan, buffer, options));
}

std::span<std::byte> LoadedCheckpoint::bytes(const LoadedTensor& tensor) const noexcept {
  const LoadedTensor* own = &tensor;
  const LoadedTensor* first = plan_.tensors.data();
  if (own < first || own >= first + plan_.tensors.size()) {
    own = find(tensor.name);
    if (!own) return {};
  }
  const auto size = static_cast<std::size_t>(own->byte_count);
  if (!mapped_data_.empty()) return {mapped_data_[static_cast<std::size_t>(own - first)], size};
  return {buffer_.get() + own->offset, size};
}

const LoadedTensor* LoadedCheckpoint::find(std::string_view name) const noexcept {
  const auto it = std::lower_bound(
      plan_.tensors.begin(), plan_.tensors.end(), name,
      [](const LoadedTensor& tensor, std::string_view key) { return tensor.name < key; });
  return it != plan_.tensors.end() && it->name == name ? &*it : nullptr;
}

LoadedCheckpoint load(const Checkpoint& checkpoint, const LoadOptions& options) {
  LoadedCheckpoint loaded;
  loaded.plan_ = plan_load(checkpoint, options);
  // `automatic` maps whenever it can. bench/cold_load.py on the development VM (498 MB file
  // and a 2 GB 4-shard checkpoint, medians of 3, alternating with `cat`): Python's
  // load_checkpoint copying into new memory reached 0.38-0.82x `cat`'s rate cold and took
  // 0.08-0.6 s warm; mapped and populated, 1.08x and 1.76x cold and 7 ms warm (README,
  // "Cold and warm loads against `cat`").
  const bool map = options.method == LoadMethod::mapped || options.method == LoadMethod::automatic;
  if (map && can_map(checkpoint, loaded.plan_, options)) {
    map_tensors(checkpoint, loaded.plan_, options, loaded.mapped_data_, loaded.mappings_);
    return loaded;
  }
  if (options.method == LoadMethod::mapped) {
    detail::fail(ErrorCode::invalid_argument, origin(checkpoint),
                 "LoadMethod::mapped loads whole tensors as stored, from files: a dtype "
                 "conversion, a part of a tensor or of the buffer, or a checkpoint in memory "
                 "needs another method");
  }
  // One allocation of the plan's size; the pages are first touched by the workers that fill
  // them, in parallel.
  loaded.buffer_ = allocate(loaded.plan_.buffer_size);
  load_into(checkpoint, loaded.plan_,
            {loaded.buffer_.get(), static_cast<std::size_t>(loaded.plan_.buffer_size)}, options);
  return loaded;
}

detail::LoadJob detail::make_load_job(const Checkpoint& checkpoint, const LoadPlan& plan,
                                      std::span<std::byte> buffer, const LoadOptions& options,
                                      bool open_direct) {
  return make_job(checkpoint, plan, buffer, options, open_direct);
}

}  // namespace safetensors
