#include "progress.hpp"

#include <fmt/core.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <utility>

#include "cli_common.hpp"
#include "encoding/utf8.hpp"

namespace safetensors::cli {
namespace {

// A person cannot read faster; more redraws only cost time.
constexpr auto redraw_interval = std::chrono::milliseconds(100);
// Wider than the terminal, the line would wrap and '\r' could no longer erase it; 79 columns
// when the terminal does not say its width.
constexpr std::size_t default_width = 79;
constexpr std::size_t bar_width = 20;

std::string amount(std::uint64_t value, Progress::Unit unit) {
  return unit == Progress::Unit::bytes ? human_size(value) : std::to_string(value);
}

std::size_t terminal_width() {
  winsize size{};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &size) != 0 || size.ws_col < 2) return default_width;
  return std::min<std::size_t>(default_width, size.ws_col - 1u);
}

}  // namespace

Progress::Progress(std::string label, std::uint64_t total, Unit unit)
    : shown_(::isatty(STDERR_FILENO) == 1),
      width_(shown_ ? terminal_width() : default_width),
      label_(std::move(label)),
      total_(total),
      unit_(unit) {}

Progress::~Progress() {
  clear();
}

void Progress::update(std::uint64_t done) {
  done_ = done;
  if (!shown_) return;
  // last_draw_ starts at the clock's epoch, so the first call draws at once: the line
  // appears even for a short operation (and is erased at its end).
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < redraw_interval) return;
  last_draw_ = now;
  draw();
}

void Progress::draw() {
  const std::uint64_t done = std::min(done_, total_);
  const unsigned percent = total_ ? static_cast<unsigned>(done * 100 / total_) : 100;
  const std::size_t filled = percent * bar_width / 100;
  std::string line = fmt::format("{} [{}{}] {:3}% {} / {}", printable(label_),
                                 std::string(filled, '#'), std::string(bar_width - filled, ' '),
                                 percent, amount(done, unit_), amount(total_, unit_));
  if (line.size() > width_) {
    // Cut before a character, not inside a UTF-8 sequence of a file name.
    line.resize(detail::utf8_cut_point(line, width_));
  }
  // Spaces cover what a longer previous line left.
  const std::size_t pad = drawn_width_ > line.size() ? drawn_width_ - line.size() : 0;
  fmt::print(stderr, "\r{}{}", line, std::string(pad, ' '));
  std::fflush(stderr);
  drawn_width_ = std::max(line.size(), drawn_width_);
}

void Progress::clear() {
  if (drawn_width_ == 0) return;
  fmt::print(stderr, "\r{}\r", std::string(drawn_width_, ' '));
  std::fflush(stderr);
  drawn_width_ = 0;
}

std::function<void(std::uint64_t, std::uint64_t)> Progress::callback() {
  return [this](std::uint64_t done, std::uint64_t total) {
    total_ = total;
    update(done);
  };
}

TrackedWrite::TrackedWrite(std::string label, std::span<const TensorData> tensors,
                           std::uint64_t total)
    : progress_(std::move(label), total), tensors_(tensors) {
  if (!progress_.shown()) return;
  tracked_.reserve(tensors.size());
  for (const TensorData& t : tensors) {
    tracked_.push_back(TensorData::from_producer(
        t.name, t.dtype, t.shape,
        [&t, progress = &progress_](std::uint64_t offset, std::span<std::byte> out) {
          if (t.producer) {
            t.producer(offset, out);
          } else if (!out.empty()) {
            std::memcpy(out.data(), t.bytes.data() + offset, out.size());
          }
          progress->advance(out.size());
        }));
  }
  tensors_ = tracked_;
  progress_.update(0);
}

}  // namespace safetensors::cli
