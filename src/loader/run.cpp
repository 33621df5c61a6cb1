#include "loader/run.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <span>
#include <thread>

#include "io/memory.hpp"
#include "loader/progress.hpp"
#include "safetensors/cast.hpp"

namespace safetensors::detail {
namespace {

// Converting reads land in a bounce buffer small enough to stay in cache while it is cast.
constexpr std::size_t convert_block = std::size_t{1} << 20;
// Destinations at least this large get their pages faulted in ahead of the copies.
constexpr std::size_t prefault_minimum = std::size_t{64} << 20;
// O_DIRECT reads go to the device: larger requests keep it busy.
constexpr std::size_t direct_block = std::size_t{8} << 20;

struct AlignedFree {
  void operator()(std::byte* p) const noexcept {
    ::operator delete[](p, std::align_val_t{direct_alignment});
  }
};
using Bounce = std::unique_ptr<std::byte[], AlignedFree>;

Bounce make_bounce(std::size_t size) {
  return Bounce(
      static_cast<std::byte*>(::operator new[](size, std::align_val_t{direct_alignment})));
}

// Largest multiple of the source element size not above `limit`.
std::size_t whole_elements(const LoadPiece& piece, std::size_t limit) {
  if (piece.from == piece.to) return limit;
  const std::size_t width = dtype_bits(piece.from) / 8;
  return limit / width * width;
}

// Copies or converts `source`, the bytes at `at` within the piece, into the destination.
void deliver(const LoadPiece& piece, std::span<const std::byte> source, std::uint64_t at) {
  if (piece.from == piece.to) {
    std::memcpy(piece.dest + at, source.data(), source.size());
    return;
  }
  const std::size_t in_width = dtype_bits(piece.from) / 8;
  const std::size_t out_width = dtype_bits(piece.to) / 8;
  cast(piece.from, source, piece.to,
       {piece.dest + at / in_width * out_width, source.size() / in_width * out_width});
}

// One worker's state: its bounce buffer lives as long as the worker.
class Worker {
 public:
  Worker(const LoadJob& job, LoadProgress& progress) : job_(job), progress_(progress) {}

  void run_item(std::size_t item) {
    for (std::size_t p = job_.item_begin[item]; p < job_.item_begin[item + 1]; ++p) {
      run_piece(job_.pieces[p]);
      progress_.add(job_.pieces[p].dest_length);
    }
  }

 private:
  void run_piece(const LoadPiece& piece) {
    if (piece.length == 0) return;
    const BulkReader& shard = *job_.shards[piece.shard];
    const bool converts = piece.from != piece.to;
    if (job_.method == LoadMethod::mmap && shard.mapping()) {
      shard.prefetch(piece.offset, piece.length);
      shard.count_mapped(piece.length);
      deliver(piece, {shard.mapping() + piece.offset, static_cast<std::size_t>(piece.length)}, 0);
    } else if (job_.method == LoadMethod::direct) {
      run_blocks(piece, direct_block, [&](std::uint64_t at, std::size_t length) {
        deliver(piece, shard.read_direct(piece.offset + at, length, bounce(direct_block)), at);
      });
    } else if (!converts) {
      // No conversion: the kernel copies straight into the destination.
      shard.read(piece.offset, {piece.dest, static_cast<std::size_t>(piece.length)});
    } else {
      run_blocks(piece, convert_block, [&](std::uint64_t at, std::size_t length) {
        const std::span<std::byte> block = bounce(convert_block).first(length);
        shard.read(piece.offset + at, block);
        deliver(piece, block, at);
      });
    }
  }

  template <class Fn>
  void run_blocks(const LoadPiece& piece, std::size_t block, Fn&& fn) {
    const std::size_t step = whole_elements(piece, block);
    for (std::uint64_t at = 0; at < piece.length; at += step) {
      fn(at, static_cast<std::size_t>(std::min<std::uint64_t>(step, piece.length - at)));
    }
  }

  // Room for a block plus the alignment slack O_DIRECT adds at both ends.
  std::span<std::byte> bounce(std::size_t block) {
    const std::size_t size = block + 2 * direct_alignment;
    if (bounce_size_ < size) {
      bounce_ = make_bounce(size);
      bounce_size_ = size;
    }
    return {bounce_.get(), bounce_size_};
  }

  const LoadJob& job_;
  LoadProgress& progress_;
  Bounce bounce_;
  std::size_t bounce_size_ = 0;
};

}  // namespace

void run_load(const LoadJob& job) {
  LoadProgress progress(job.progress, job.total_bytes);
  const std::size_t items = job.item_begin.empty() ? 0 : job.item_begin.size() - 1;
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex error_mutex;
  std::exception_ptr error;

  auto work = [&] {
    try {
      Worker worker(job, progress);
      while (!failed.load(std::memory_order_relaxed)) {
        const std::size_t item = next.fetch_add(1, std::memory_order_relaxed);
        if (item >= items) break;
        worker.run_item(item);
      }
    } catch (...) {
      std::lock_guard lock(error_mutex);
      if (!error) error = std::current_exception();
      failed.store(true, std::memory_order_relaxed);
    }
  };

  {
    // Memory never touched before costs a page fault, and the kernel's zeroing of the page,
    // on first write: a third of a cold load of fresh memory in a profile on the development
    // VM. One more thread faults the destination in, in order, while the workers wait for
    // the disk; it stops once they are done (bench/cold_load.py, load_checkpoint rows).
    std::atomic<bool> done{false};
    std::jthread prefaulter;
    if (job.destination.size() >= prefault_minimum) {
      prefaulter = std::jthread([&] { (void)prefault_for_write(job.destination, done); });
    }
    const unsigned threads =
        static_cast<unsigned>(std::clamp<std::size_t>(items, 1, std::max(job.threads, 1u)));
    std::vector<std::jthread> helpers;
    helpers.reserve(threads - 1);
    for (unsigned i = 1; i < threads; ++i) helpers.emplace_back(work);
    work();
    helpers.clear();  // joins the workers
    done.store(true, std::memory_order_relaxed);
  }  // joins the prefaulter
  if (error) std::rethrow_exception(error);
  if (job.progress && job.total_bytes == 0) job.progress(0, 0);
}

}  // namespace safetensors::detail
