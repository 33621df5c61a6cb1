#include "convert/write.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <optional>
#include <system_error>
#include <thread>

#include "convert/copy.hpp"
#include "error/messages.hpp"
#include "io/posix.hpp"
#include "safetensors/atomic_file.hpp"
#include "safetensors/error.hpp"
#include "safetensors/file.hpp"
#include "safetensors/writer.hpp"

namespace safetensors::detail {
namespace {

// Storages that a later tensor still needs are kept up to this many bytes (or the largest
// storage, if bigger); see StorageCache for the resulting peak.
constexpr std::uint64_t cache_budget = std::uint64_t{128} << 20;
// Writes and read-backs go in pieces of this size. A multiple of every element size, so
// strided checks see whole elements per chunk.
constexpr std::uint64_t chunk_bytes = std::uint64_t{8} << 20;
// Reading back is memory-bound; beyond a few threads they only compete for bandwidth.
constexpr unsigned max_verify_threads = 4;

// Reads back what was written, through a descriptor of its own: a Source's size is fixed
// when it opens, and the file is still growing.
class ReadBack {
 public:
  explicit ReadBack(const std::filesystem::path& path)
      : name_(path.string()), fd_(open_regular_file(name_)) {}

  void read(std::uint64_t offset, std::span<std::byte> out) const {
    pread_exact(fd_.get(), name_, offset, out);
  }

 private:
  std::string name_;
  FileDescriptor fd_;
};

// The first `n` bytes of a scratch buffer that only ever grows, so it is zeroed once.
std::span<std::byte> first_bytes(std::vector<std::byte>& scratch, std::size_t n) {
  if (scratch.size() < n) scratch.resize(n);
  return std::span(scratch).first(n);
}

class VerifiedWrite {
 public:
  VerifiedWrite(const ConvertPlan& plan, const std::filesystem::path& output,
                const ConvertOptions& options)
      : plan_(plan), output_(output), options_(options) {}

  std::uint64_t run() {
    plan_layout();
    AtomicFile file(output_);
    reserve_space(file.temp_path(), layout_.file_size());
    ReadBack back(file.temp_path());
    back_ = &back;
    file.write(std::as_bytes(std::span(layout_.header)));
    progress(layout_.header.size());
    for (std::size_t use = 0; use < by_use_.size(); ++use) {
      // Every earlier tensor is in the file now: check it while its storage is still at
      // hand, and let the cache drop that storage before this one is loaded.
      verify_until(use);
      write_tensor(file, by_use_[use], cache_->acquire(use));
    }
    verify_until(by_use_.size());
    check_header(file.temp_path());
    file.commit();
    return layout_.file_size();
  }

 private:
  const ConvertPlan& plan_;
  std::filesystem::path output_;
  const ConvertOptions& options_;
  WritePlan layout_;
  std::vector<std::size_t> by_use_;  // item index of each use (tensors with bytes, in order)
  std::optional<StorageCache> cache_;
  const ReadBack* back_ = nullptr;
  std::size_t verified_ = 0;      // uses verified so far
  std::vector<std::byte> chunk_;  // for gathering strided tensors
  // One read-back buffer per verifying thread.
  std::vector<std::vector<std::byte>> verify_buffers_ = std::vector<std::vector<std::byte>>(
      std::clamp(std::thread::hardware_concurrency(), 1u, max_verify_threads));
  std::uint64_t written_ = 0;  // tensor bytes so far, to check against the layout
  std::uint64_t done_ = 0;
  std::uint64_t total_ = 0;

  void progress(std::uint64_t bytes) {
    done_ += bytes;
    if (options_.progress) options_.progress(done_, total_);
  }

  [[noreturn]] void mismatch(const std::string& what) const {
    // The source changed while it was copied, or the disk returned other bytes.
    fail(ErrorCode::io, output_.string(), "verification after writing failed: " + what);
  }

  // The writer's layout (header bytes, dtype-then-name order, offsets) for the planned
  // tensors, and the order in which their storages will be used.
  void plan_layout() {
    std::vector<TensorData> tensors;
    std::uint64_t largest = 0;
    // Only planned, never streamed by the writer: write_tensor supplies the bytes.
    const Producer unused = [](std::uint64_t, std::span<std::byte>) {};
    for (const ConvertItem& item : plan_.items) {
      tensors.push_back(TensorData::from_producer(item.name, item.dtype, item.shape, unused));
      largest = std::max(largest, plan_.storage_bytes.at(item.storage));
      total_ += item.bytes;
    }
    WriteOptions write_options;
    write_options.metadata = plan_.metadata;
    layout_ = plan_write(tensors, write_options);
    total_ += layout_.file_size();
    std::vector<std::string> uses;
    for (std::size_t i : layout_.order) {
      if (plan_.items[i].bytes == 0) continue;
      by_use_.push_back(i);
      uses.push_back(plan_.items[i].storage);
    }
    cache_.emplace(plan_.load, std::move(uses), plan_.storage_bytes,
                   std::max(cache_budget, largest), plan_.origin);
  }

  // Contiguous tensors go to the file straight from the storage (a mapping, usually);
  // strided ones are gathered a chunk at a time.
  void write_tensor(AtomicFile& file, std::size_t index, std::span<const std::byte> storage) {
    const ConvertItem& item = plan_.items[index];
    if (written_ != layout_.begin[index]) {
      mismatch("tensor " + quote(item.name) + " would start at " + std::to_string(written_) +
               " instead of " + std::to_string(layout_.begin[index]));
    }
    const std::uint64_t start = item.offset * element_size(item.dtype);
    for (std::uint64_t off = 0; off < item.bytes; off += chunk_bytes) {
      const auto n = static_cast<std::size_t>(std::min(chunk_bytes, item.bytes - off));
      if (item.contiguous) {
        file.write(storage.subspan(static_cast<std::size_t>(start + off), n));
      } else {
        const std::span<std::byte> chunk = first_bytes(chunk_, n);
        gather(item, storage, off, chunk);
        file.write(chunk);
      }
      progress(n);
    }
    written_ += item.bytes;
  }

  void verify_until(std::size_t use) {
    for (; verified_ < use; ++verified_) {
      verify(by_use_[verified_], cache_->acquire(verified_));
      cache_->release(verified_);
    }
  }

  // Strided tensors are compared element by element with index arithmetic of their own,
  // so a mistake in `gather` shows. A large tensor's chunks are shared among threads, each
  // reading back into its own buffer.
  void verify(std::size_t index, std::span<const std::byte> storage) {
    const ConvertItem& item = plan_.items[index];
    const std::uint64_t chunks = (item.bytes + chunk_bytes - 1) / chunk_bytes;
    const auto workers = static_cast<std::size_t>(
        std::min<std::uint64_t>(verify_buffers_.size(), std::max<std::uint64_t>(chunks, 1)));
    std::atomic<bool> differs{false};
    std::vector<std::exception_ptr> errors(workers);
    const auto work = [&](std::size_t worker) {
      try {
        for (std::uint64_t c = worker; c < chunks && !differs; c += workers) {
          if (!chunk_matches(index, storage, c * chunk_bytes, verify_buffers_[worker])) {
            differs = true;
          }
        }
      } catch (...) {
        errors[worker] = std::current_exception();
      }
    };
    {
      std::vector<std::jthread> helpers;
      std::size_t started = 1;
      try {
        for (; started < workers; ++started) helpers.emplace_back(work, started);
      } catch (const std::system_error&) {
        // No more threads (a process limit): this thread takes the shares left over.
      }
      for (std::size_t w = started; w < workers; ++w) work(w);
      work(0);
    }
    for (const std::exception_ptr& error : errors) {
      if (error) std::rethrow_exception(error);
    }
    if (differs) mismatch("tensor " + quote(item.name) + " differs from the source");
    progress(item.bytes);
  }

  bool chunk_matches(std::size_t index, std::span<const std::byte> storage, std::uint64_t off,
                     std::vector<std::byte>& scratch) const {
    const ConvertItem& item = plan_.items[index];
    const std::uint64_t el = element_size(item.dtype);
    const auto n = static_cast<std::size_t>(std::min(chunk_bytes, item.bytes - off));
    const std::span<std::byte> chunk = first_bytes(scratch, n);
    back_->read(layout_.header.size() + layout_.begin[index] + off, chunk);
    if (item.contiguous) {
      return std::memcmp(chunk.data(), storage.data() + item.offset * el + off, n) == 0;
    }
    for (std::uint64_t i = 0; i < n / el; ++i) {
      const std::uint64_t at = element_position(item, off / el + i) * el;
      if (std::memcmp(chunk.data() + i * el, storage.data() + at, el) != 0) return false;
    }
    return true;
  }

  // The file as a reader sees it: validated, and holding exactly the planned tensors.
  void check_header(const std::filesystem::path& temp) const {
    const File file = File::open(temp, Backend::pread);
    if (file.size() != plan_.items.size() || file.header().data_start != layout_.header.size()) {
      mismatch(std::to_string(file.size()) + " tensors instead of " +
               std::to_string(plan_.items.size()));
    }
    if (file.metadata() != std::optional<Metadata>(plan_.metadata)) {
      mismatch("the metadata differs");
    }
    for (std::size_t i = 0; i < plan_.items.size(); ++i) {
      const ConvertItem& item = plan_.items[i];
      const TensorInfo* info = file.find(item.name);
      if (!info || info->dtype != item.dtype || info->shape != item.shape ||
          info->data_begin != layout_.begin[i] || info->byte_count() != item.bytes) {
        mismatch("tensor " + quote(item.name) + " is missing or described differently");
      }
    }
  }
};

}  // namespace

std::uint64_t write_verified(const ConvertPlan& plan, const std::filesystem::path& output,
                             const ConvertOptions& options) {
  return VerifiedWrite(plan, output, options).run();
}

}  // namespace safetensors::detail
