// Telling what a pickle-based file would run if loaded, without loading it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>
#include "safetensors/export.hpp"

namespace safetensors {

enum class ScanVerdict : std::uint8_t {
  clean = 0,       // only allowlisted globals, no dangerous finding
  dangerous = 1,   // imports something outside the allowlist or a dangerous structure
  unreadable = 2,  // not a pickle/torch/numpy file, or unreadable
};

/// "clean", "dangerous" or "unreadable", as the CLI prints and `--json` writes it.
[[nodiscard]] SAFETENSORS_API std::string_view verdict_name(ScanVerdict verdict) noexcept;

struct SAFETENSORS_API ScanFinding {
  std::string location;  // e.g. "archive/data.pkl" inside a zip, or "" for a raw pickle
  std::uint64_t offset = 0;
  std::string message;
  bool dangerous = false;
};

struct SAFETENSORS_API ScanGlobal {
  std::string location;
  std::string module;
  std::string name;
  std::uint64_t offset = 0;
  bool allowed = false;
};

struct SAFETENSORS_API ScanReport {
  std::filesystem::path path;
  // "pickle", "torch-zip", "torch-legacy", "npy", "npz", "zip" (no pickle or .npy inside,
  // or refused by the strict zip reader), "unknown"
  std::string format;
  std::vector<ScanGlobal> globals;
  std::vector<ScanFinding> findings;
  ScanVerdict verdict = ScanVerdict::unreadable;
};

/// Scans raw pickles, torch zip and legacy archives (every pickle inside), .npy and .npz.
/// Never throws for bad content: problems become findings and the verdict says what they mean.
[[nodiscard]] SAFETENSORS_API ScanReport scan_file(const std::filesystem::path& path);

}  // namespace safetensors
