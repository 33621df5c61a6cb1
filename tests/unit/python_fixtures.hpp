// Fixtures written during the tests by the Python scripts in tests/fixtures/pickles/, run
// with Debian's /usr/bin/python3 (the one with numpy and torch). The scripts only write
// files; nothing they make is ever loaded by Python.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "test_files.hpp"

namespace safetensors::test {

inline constexpr const char* system_python = "/usr/bin/python3";

/// Exit status a fixture script uses when a module it needs (torch, numpy) is missing.
inline constexpr int missing_module_status = 3;

struct Generated {
  int status = -1;  // the script's exit status; -1 when it could not run
  std::filesystem::path dir;
};

/// Runs tests/fixtures/pickles/<script> with a fresh scratch directory as its argument.
inline Generated run_fixture_script(std::string_view script) {
  static std::atomic<unsigned> counter{0};
  Generated out;
  out.dir = scratch_dir() / ("pickles-" + std::string(script) + "-" + std::to_string(::getpid()) +
                             "-" + std::to_string(counter++));
  if (!std::filesystem::exists(system_python)) return out;
  const auto path =
      std::filesystem::path(__FILE__).parent_path().parent_path() / "fixtures" / "pickles" / script;
  const std::string command =
      std::string(system_python) + " '" + path.string() + "' '" + out.dir.string() + "'";
  const int raw = std::system(command.c_str());
  if (raw != -1 && WIFEXITED(raw)) out.status = WEXITSTATUS(raw);
  return out;
}

inline std::vector<std::byte> read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(chars.size());
  for (std::size_t i = 0; i < chars.size(); ++i) out[i] = static_cast<std::byte>(chars[i]);
  return out;
}

/// The whitespace-separated words of each line of `dir/name`.
inline std::vector<std::vector<std::string>> read_manifest(const std::filesystem::path& dir,
                                                           std::string_view name = "manifest.txt") {
  std::ifstream in(dir / name);
  std::vector<std::vector<std::string>> lines;
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::vector<std::string> row{std::istream_iterator<std::string>(words), {}};
    if (!row.empty()) lines.push_back(std::move(row));
  }
  return lines;
}

}  // namespace safetensors::test
