#include "safetensors/file.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <system_error>
#include <thread>

#include "format/header_json.hpp"
#include "format/slice_runs.hpp"
#include "io/memory.hpp"
#include "safetensors/error.hpp"

namespace safetensors {

// Immutable once built, so copies of a File can share it across threads without locks.
struct File::State {
  std::shared_ptr<const Source> source;
  Header header;
};

namespace {

// What one extra positional read costs, counted in bytes read: when the bytes between the
// runs of a slice are cheaper than this per run, one covering read wins.
constexpr std::uint64_t read_call_cost = 16 * 1024;

// A header this large is read while a second thread faults in its memory.
constexpr std::size_t min_header_prefaulted = std::size_t{4} << 20;

// populate(tensors): a gap between selected tensors up to this size is read with them, as
// the kernel reads ahead that far anyway.
constexpr std::uint64_t populate_merge_gap = std::uint64_t{1} << 20;

std::string tensor_label(const std::string& file, std::string_view tensor) {
  return file + ": tensor `" + std::string(tensor) + "`";
}

}  // namespace

File File::open(const std::filesystem::path& path, Backend backend) {
  std::shared_ptr<const Source> source =
      backend == Backend::pread ? open_pread_source(path) : open_mmap_source(path);
  return from_source(std::move(source));
}

namespace {

// A file's header bytes, with the parser's padding after them, so that the header is parsed
// where it was read.
struct HeaderText {
  std::shared_ptr<std::byte[]> bytes;
  std::size_t size = 0;
  std::uint64_t data_size = 0;  // of the data buffer after it
};

HeaderText read_header_text(const Source& source) {
  const std::string& origin = source.name();
  const std::uint64_t file_size = source.size();
  std::byte prefix[8];
  const std::span<std::byte> prefix_bytes(prefix, std::min<std::uint64_t>(8, file_size));
  source.read_at(0, prefix_bytes);
  const std::uint64_t header_size = parse_header_length(prefix_bytes, file_size, origin);

  // Only the header is read; the data buffer is never touched here.
  HeaderText text;
  text.size = static_cast<std::size_t>(header_size);
  text.data_size = file_size - 8 - header_size;
  text.bytes.reset(new std::byte[text.size + detail::json_padding]);
  std::fill_n(text.bytes.get() + text.size, detail::json_padding, std::byte{0});
  const std::span<std::byte> into(text.bytes.get(), text.size);
  if (text.size < min_header_prefaulted) {
    source.read_at(8, into);
    return text;
  }
  // Each 4 KiB of fresh memory costs a page fault, most of the time of reading a large header
  // (a 22 MB one, 200,000 tensors): a second thread faults in the pages of the later half,
  // ahead of the read. Huge pages would need few faults, but on the development VM one in ten
  // runs then took four times as long: fresh 2 MiB blocks are often memory the host has taken
  // back (README, "Opening 200,000 tensors").
  const std::size_t half = text.size / 2;
  std::atomic<bool> done{false};
  std::jthread prefaulter;
  try {
    prefaulter = std::jthread([&] { (void)detail::prefault_for_write(into.subspan(half), done); });
  } catch (const std::system_error&) {
    // No thread to spare (a process limit): the read faults the pages in itself.
  }
  try {
    source.read_at(8, into);
  } catch (...) {
    done = true;  // the helper stops after its current step
    throw;
  }
  done = true;
  return text;
}

}  // namespace

File File::from_source(std::shared_ptr<const Source> source) {
  if (!source) throw Error(ErrorCode::invalid_argument, "File::from_source: null source");
  const HeaderText text = read_header_text(*source);
  auto state = std::make_shared<State>();
  state->header =
      detail::parse_padded_header({text.bytes.get(), text.size}, text.data_size, source->name());
  state->source = std::move(source);
  return File(std::move(state));
}

std::size_t File::validate(const std::filesystem::path& path) {
  const std::unique_ptr<Source> source = open_pread_source(path);
  const HeaderText text = read_header_text(*source);
  return detail::validate_padded_header({text.bytes.get(), text.size}, text.data_size,
                                        source->name());
}

const std::string& File::name() const noexcept {
  return state_->source->name();
}
const Header& File::header() const noexcept {
  return state_->header;
}
const std::optional<Metadata>& File::metadata() const noexcept {
  return state_->header.metadata;
}
const Source& File::source() const noexcept {
  return *state_->source;
}

std::size_t File::size() const noexcept {
  return state_->header.tensors.size();
}
std::span<const TensorInfo> File::tensors() const noexcept {
  return state_->header.tensors;
}

std::vector<const TensorInfo*> File::tensors_by_name() const {
  const Header& h = state_->header;
  std::vector<const TensorInfo*> out;
  out.reserve(h.name_order.size());
  for (std::size_t i : h.name_order) out.push_back(&h.tensors[i]);
  return out;
}

const TensorInfo* File::find(std::string_view name) const noexcept {
  const Header& h = state_->header;
  const auto it = std::lower_bound(h.name_order.begin(), h.name_order.end(), name,
                                   [&](std::size_t i, std::string_view key) {
                                     return std::string_view(h.tensors[i].name) < key;
                                   });
  if (it == h.name_order.end() || h.tensors[*it].name != name) return nullptr;
  return &h.tensors[*it];
}

const TensorInfo& File::info(std::string_view name) const {
  if (const TensorInfo* found = find(name)) return *found;
  throw Error(ErrorCode::tensor_not_found,
              this->name() + ": no tensor named `" + std::string(name) + "`");
}

bool File::zero_copy() const noexcept {
  return !state_->source->mapped().empty();
}

void File::populate(unsigned threads) const {
  populate(threads, {});
}

void File::populate(unsigned threads,
                    const std::function<void(std::uint64_t, std::uint64_t)>& progress) const {
  const std::span<const std::byte> mapped = state_->source->mapped();
  if (mapped.empty()) return;
  const std::span<const std::byte> ranges[] = {
      mapped.subspan(static_cast<std::size_t>(state_->header.data_start))};
  detail::populate(ranges, threads, name(), progress);
}

void File::populate(std::span<const TensorInfo* const> selected, unsigned threads) const {
  populate(selected, threads, {});
}

void File::populate(std::span<const TensorInfo* const> selected, unsigned threads,
                    const std::function<void(std::uint64_t, std::uint64_t)>& progress) const {
  const std::span<const TensorInfo> all = tensors();
  std::vector<const TensorInfo*> order(selected.begin(), selected.end());
  for (const TensorInfo* info : order) {
    if (info < all.data() || info >= all.data() + all.size()) {
      throw Error(ErrorCode::invalid_argument,
                  name() + ": populate was given a tensor that is not one of this file's");
    }
  }
  const std::span<const std::byte> mapped = state_->source->mapped();
  if (mapped.empty() || order.empty()) return;
  // `all` is in data order, so pointer order is data order.
  std::sort(order.begin(), order.end());
  const std::span<const std::byte> data =
      mapped.subspan(static_cast<std::size_t>(state_->header.data_start));
  std::vector<std::span<const std::byte>> ranges;
  std::uint64_t begin = order.front()->data_begin, end = order.front()->data_end;
  for (const TensorInfo* info : order) {
    if (info->data_begin > end + populate_merge_gap) {
      ranges.push_back(data.subspan(begin, end - begin));
      begin = info->data_begin;
    }
    end = std::max(end, info->data_end);
  }
  ranges.push_back(data.subspan(begin, end - begin));
  detail::populate(ranges, threads, name(), progress);
}

TensorView File::view(std::string_view name) const {
  return view(info(name));
}

TensorView File::view(const TensorInfo& info) const {
  const std::span<const std::byte> mapped = state_->source->mapped();
  if (mapped.empty()) {
    throw Error(ErrorCode::invalid_argument,
                tensor_label(name(), info.name) +
                    ": the pread backend has no zero-copy views; use read() to copy the tensor "
                    "into your own buffer, or open the file with the mmap backend");
  }
  return {&info, mapped.subspan(state_->header.data_start + info.data_begin, info.byte_count())};
}

void File::read(const TensorInfo& info, std::span<std::byte> out) const {
  if (out.size() != info.byte_count()) {
    throw Error(ErrorCode::invalid_argument,
                tensor_label(name(), info.name) + " is " + std::to_string(info.byte_count()) +
                    " bytes but the output buffer holds " + std::to_string(out.size()) + " bytes");
  }
  state_->source->read_at(state_->header.data_start + info.data_begin, out);
}

void File::read(std::string_view name, std::span<std::byte> out) const {
  read(info(name), out);
}

std::vector<std::byte> File::read(std::string_view name) const {
  const TensorInfo& found = info(name);
  std::vector<std::byte> out(found.byte_count());
  read(found, out);
  return out;
}

SlicedTensor File::slice(std::string_view name, std::span<const SliceArg> args) const {
  const TensorInfo& t = info(name);
  SlicePlan plan;
  try {
    plan = plan_slice(t.name, t.dtype, t.shape, args);
  } catch (const Error& e) {
    throw Error(e.code(), this->name() + ": " + e.what());
  }
  const detail::RunLayout layout = detail::byte_layout(plan, t.dtype, t.shape);
  const std::uint64_t tensor_start = state_->header.data_start + t.data_begin;
  const std::span<const std::byte> mapped = state_->source->mapped();

  if (!mapped.empty()) {
    const std::span<const std::byte> whole = mapped.subspan(tensor_start, t.byte_count());
    if (plan.contiguous) {
      return {t.dtype, std::move(plan.shape),
              whole.subspan(layout.base, layout.run_count * layout.run)};
    }
    std::vector<std::byte> out(layout.run_count * layout.run);
    copy_slice(plan, t.dtype, t.shape, whole, out);
    return {t.dtype, std::move(plan.shape), std::move(out)};
  }

  // Without a mapping, read only what the slice needs: one covering read when the gaps
  // between runs are cheaper than a read call per run.
  const Source& source = *state_->source;
  const std::uint64_t needed = layout.run_count * layout.run;
  std::vector<std::byte> out(needed);
  const std::uint64_t covering = layout.end() - layout.base;
  if (layout.run_count <= 1) {
    source.read_at(tensor_start + layout.base, out);
  } else if (covering <= needed + layout.run_count * read_call_cost) {
    std::vector<std::byte> cover(covering);
    source.read_at(tensor_start + layout.base, cover);
    detail::for_each_run(layout, [&](std::uint64_t s, std::uint64_t d, std::uint64_t len) {
      std::memcpy(out.data() + d, cover.data() + (s - layout.base), len);
    });
  } else {
    detail::for_each_run(layout, [&](std::uint64_t s, std::uint64_t d, std::uint64_t len) {
      source.read_at(tensor_start + s, std::span<std::byte>(out).subspan(d, len));
    });
  }
  return {t.dtype, std::move(plan.shape), std::move(out)};
}

}  // namespace safetensors
