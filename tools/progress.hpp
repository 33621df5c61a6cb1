// Progress of the `safetensors` command's long operations, shown on a terminal only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "safetensors/writer.hpp"

namespace safetensors::cli {

/// One line on stderr, "LABEL [####      ]  40% 1.2 MiB / 3.0 MiB", redrawn at most 10 times
/// a second and erased when the operation ends, so that it never stays in the output. Drawn
/// only when stderr is a terminal: pipes, files and scripts get nothing. Not thread-safe: one
/// thread updates it.
class Progress {
 public:
  enum class Unit { bytes, items };

  Progress(std::string label, std::uint64_t total, Unit unit = Unit::bytes);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  /// False when stderr is not a terminal: callers may then skip work done only for progress.
  bool shown() const noexcept { return shown_; }
  void update(std::uint64_t done);
  void advance(std::uint64_t count) { update(done_ + count); }
  /// A new label (bench's current measurement), drawn with the next update.
  void relabel(std::string label) { label_ = std::move(label); }
  /// Erases the line, so a result printed on a terminal shared with stdout is not mixed
  /// with it; the next update draws it again.
  void clear();
  /// For library functions that report (done, total), such as ConvertOptions::progress.
  std::function<void(std::uint64_t, std::uint64_t)> callback();

 private:
  void draw();

  bool shown_;
  std::size_t width_;  // columns the line may take
  std::string label_;
  std::uint64_t total_;
  Unit unit_;
  std::uint64_t done_ = 0;
  std::size_t drawn_width_ = 0;  // columns on screen, 0 when nothing is drawn
  std::chrono::steady_clock::time_point last_draw_{};
};

/// Tensors about to be written, with the writer's progress: when the progress is shown, each
/// tensor's data comes through a producer that advances it by the bytes handed to the writer;
/// otherwise the tensors are written as given (no extra copy).
class TrackedWrite {
 public:
  /// `total` is the tensors' data size; `tensors` must outlive this object.
  TrackedWrite(std::string label, std::span<const TensorData> tensors, std::uint64_t total);
  TrackedWrite(const TrackedWrite&) = delete;
  TrackedWrite& operator=(const TrackedWrite&) = delete;

  std::span<const TensorData> tensors() const noexcept { return tensors_; }
  /// Ends the display before the summary is printed.
  void finish() { progress_.clear(); }

 private:
  Progress progress_;
  std::vector<TensorData> tracked_;
  std::span<const TensorData> tensors_;
};

}  // namespace safetensors::cli
