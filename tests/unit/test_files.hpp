// Test helpers for building safetensors files by hand, independent of the library's writer:
// a header JSON string plus data bytes become file bytes, optionally written to a unique
// scratch file that deletes itself; and a Source wrapper that records what is read.
#pragma once

#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "safetensors/source.hpp"

namespace safetensors::test {

/// The 8-byte little-endian length, then `header_json` as is, then `data`.
inline std::vector<std::byte> file_bytes(std::string_view header_json,
                                         std::span<const std::byte> data = {}) {
  std::vector<std::byte> out;
  out.reserve(8 + header_json.size() + data.size());
  std::uint64_t n = header_json.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>((n >> (8 * i)) & 0xff));
  for (char c : header_json) out.push_back(static_cast<std::byte>(c));
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

/// Bytes of any trivially copyable values, in memory (little-endian) order.
template <class T>
std::vector<std::byte> as_bytes(const std::vector<T>& values) {
  const auto bytes = std::as_bytes(std::span<const T>(values));
  return {bytes.begin(), bytes.end()};
}

/// `n` bytes counting up from `start`, wrapping at 251 (a prime, so that no power-of-two
/// block or page repeats another and a read from the wrong offset shows).
inline std::vector<std::byte> counting_bytes(std::size_t n, unsigned start = 0) {
  std::vector<std::byte> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>((i + start) % 251);
  return out;
}

/// The scratch directory: $SAFETENSORS_TEST_TMP (set by ctest) or the system temp dir.
inline std::filesystem::path scratch_dir() {
  const char* env = std::getenv("SAFETENSORS_TEST_TMP");
  std::filesystem::path dir = env && *env ? env : std::filesystem::temp_directory_path();
  std::filesystem::create_directories(dir);
  return dir;
}

/// A path in the scratch directory no other test process or thread will pick.
inline std::filesystem::path unique_path(std::string_view stem) {
  static std::atomic<unsigned> counter{0};
  return scratch_dir() / (std::string(stem) + "-" + std::to_string(::getpid()) + "-" +
                          std::to_string(counter++) + ".safetensors");
}

/// Writes `bytes` to `path`, replacing it.
inline void write_file(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write test file " + path.string());
}

/// A unique scratch file removed when the object goes out of scope.
class ScratchFile {
 public:
  explicit ScratchFile(std::string_view stem, std::span<const std::byte> bytes = {})
      : path_(unique_path(stem)) {
    write_file(path_, bytes);
  }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;
  ~ScratchFile() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

/// Wraps a source and records every read_at range, to check what a reader touches.
/// Hides the inner mapping, so readers take their pread path.
class RecordingSource final : public Source {
 public:
  explicit RecordingSource(std::shared_ptr<const Source> inner) : inner_(std::move(inner)) {}

  std::uint64_t size() const noexcept override { return inner_->size(); }
  void read_at(std::uint64_t offset, std::span<std::byte> out) const override {
    {
      std::lock_guard lock(mutex_);
      reads_.emplace_back(offset, out.size());
    }
    inner_->read_at(offset, out);
  }
  const std::string& name() const noexcept override { return inner_->name(); }

  /// (offset, length) of every read so far.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> reads() const {
    std::lock_guard lock(mutex_);
    return reads_;
  }
  std::uint64_t bytes_read() const {
    std::uint64_t total = 0;
    for (const auto& r : reads()) total += r.second;
    return total;
  }
  void clear() {
    std::lock_guard lock(mutex_);
    reads_.clear();
  }

 private:
  std::shared_ptr<const Source> inner_;
  mutable std::mutex mutex_;
  mutable std::vector<std::pair<std::uint64_t, std::uint64_t>> reads_;
};

}  // namespace safetensors::test
