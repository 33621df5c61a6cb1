// Progress reports of a load, shared by the host loader and the device pipeline.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>

namespace safetensors::detail {

/// Serializes and throttles the callback of LoadOptions::progress: at most about 256 calls per
/// load, values never go backwards, and the call with the total is always made (by the
/// worker that finishes). add() may be called from any thread.
class LoadProgress {
 public:
  LoadProgress(const std::function<void(std::uint64_t, std::uint64_t)>& callback,
               std::uint64_t total)
      : callback_(callback), total_(total), step_(std::max<std::uint64_t>(total / 256, 1)) {}

  void add(std::uint64_t bytes) {
    if (!callback_ || bytes == 0) return;
    const std::uint64_t done = done_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    const bool final = done == total_;
    if (!final && done < next_.load(std::memory_order_relaxed)) return;
    std::unique_lock lock(mutex_, std::defer_lock);
    if (final) {
      lock.lock();
    } else if (!lock.try_lock()) {
      return;  // another worker is reporting; a later report covers this one
    }
    if (done <= reported_) return;
    reported_ = done;
    next_.store(done + step_, std::memory_order_relaxed);
    callback_(done, total_);
  }

 private:
  const std::function<void(std::uint64_t, std::uint64_t)>& callback_;
  std::uint64_t total_;
  std::uint64_t step_;
  std::atomic<std::uint64_t> done_{0};
  std::atomic<std::uint64_t> next_{0};
  std::mutex mutex_;
  std::uint64_t reported_ = 0;
};

}  // namespace safetensors::detail
